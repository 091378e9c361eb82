-- A rater's submission on PostgreSQL (labeling.services.assignment): lock the assignment and its task, refuse
-- a submission on a task that was skipped, closed or whose slot went to someone else, insert the judgement, and
-- complete the task once it has the human judgements it needs, in one round trip. A gold task has no slot limit
-- and never completes: every rater of the project may judge it once.
--
-- This file is the function's source of truth. A migration installs a copy of it (labeling/migrations/sql/):
-- after changing it, add a migration that copies it there and runs it (tests/test_sql_functions.py checks).
CREATE OR REPLACE FUNCTION labeling_judgement_submit(p_assignment bigint, p_now timestamptz, p_row jsonb)
RETURNS TABLE (outcome text, judgement_id bigint)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$
DECLARE
    v_state text;
    v_expires timestamptz;
    v_task bigint;
    v_status text;
    v_required integer;
    v_gold boolean;
    v_row labeling_judgement;
BEGIN
    -- Every change to who holds a slot of this task waits on these two locks.
    SELECT a.state, a.expires_at, t.id, t.status, t.required_judgements, t.is_gold
        INTO v_state, v_expires, v_task, v_status, v_required, v_gold
        FROM labeling_assignment a JOIN labeling_comparisontask t ON t.id = a.task_id
        WHERE a.id = p_assignment
        FOR UPDATE OF a, t;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, NULL::bigint;
        RETURN;
    END IF;
    IF v_state IN ('submitted', 'skipped') THEN
        RETURN QUERY SELECT v_state, NULL::bigint;
        RETURN;
    END IF;
    IF v_status <> 'open' THEN
        RETURN QUERY SELECT 'closed'::text, NULL::bigint;
        RETURN;
    END IF;
    -- A lease that ran out still counts if nobody else took the slot meanwhile.
    IF (v_expires <= p_now OR v_state = 'expired') AND NOT v_gold
       AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task AND j.source = 'human')
           + (SELECT COUNT(*) FROM labeling_assignment a
              WHERE a.task_id = v_task AND a.state = 'leased' AND a.expires_at > p_now) >= v_required THEN
        RETURN QUERY SELECT 'taken'::text, NULL::bigint;
        RETURN;
    END IF;
    -- The row comes whole from the model, so new columns need no change here.
    v_row := jsonb_populate_record(NULL::labeling_judgement, p_row);
    v_row.id := nextval(pg_get_serial_sequence('labeling_judgement', 'id'));
    INSERT INTO labeling_judgement SELECT v_row.*;
    UPDATE labeling_assignment SET state = 'submitted' WHERE id = p_assignment;
    UPDATE labeling_comparisontask SET status = 'complete', updated_at = p_now
        WHERE id = v_task AND status = 'open' AND NOT is_gold
          AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task AND j.source = 'human') >= required_judgements;
    RETURN QUERY SELECT 'created'::text, v_row.id;
END;
$$;
