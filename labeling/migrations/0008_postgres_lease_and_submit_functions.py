"""PostgreSQL functions for the two calls every rater makes all day: lease the next task, and store a
judgement. Each runs in one round trip instead of ten, under the same locks and checks as the Python path
(which SQLite keeps using). READ COMMITTED gives every statement inside a PL/pgSQL function a fresh
snapshot, so a count taken after a lock sees what the lock holder committed, as in the Python path.
"""

from django.db import migrations

LEASE_NEXT = """
CREATE OR REPLACE FUNCTION labeling_lease_next(
    p_project bigint, p_rater bigint, p_want_gold boolean, p_now timestamptz, p_lease interval
) RETURNS SETOF labeling_assignment
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_gold boolean;
    v_after bigint;
    v_passed bigint[];
    v_task bigint;
    v_required integer;
BEGIN
    -- The lease the rater already holds in this project, if any.
    RETURN QUERY
        SELECT a.* FROM labeling_assignment a JOIN labeling_comparisontask t ON t.id = a.task_id
        WHERE a.rater_id = p_rater AND t.project_id = p_project AND t.status = 'open'
          AND a.state = 'leased' AND a.expires_at > p_now
        ORDER BY a.leased_at LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    FOREACH v_gold IN ARRAY ARRAY[p_want_gold, NOT p_want_gold] LOOP
        -- Raters take tasks in id order: start above the last one this rater held.
        SELECT a.task_id INTO v_after FROM labeling_assignment a
            JOIN labeling_comparisontask t ON t.id = a.task_id
            WHERE a.rater_id = p_rater AND t.project_id = p_project AND t.is_gold = v_gold
            ORDER BY a.task_id DESC LIMIT 1;
        v_after := COALESCE(v_after, 0);
        v_passed := ARRAY[]::bigint[];
        LOOP
            SELECT t.id, t.required_judgements INTO v_task, v_required FROM labeling_comparisontask t
                WHERE t.project_id = p_project AND t.status = 'open' AND t.is_gold = v_gold AND t.id > v_after
                  AND NOT (t.id = ANY (v_passed))
                  AND NOT EXISTS (SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.rater_id = p_rater)
                  AND NOT EXISTS (SELECT 1 FROM labeling_judgement j WHERE j.task_id = t.id AND j.rater_id = p_rater)
                  AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = t.id)
                    + (SELECT COUNT(*) FROM labeling_assignment a
                       WHERE a.task_id = t.id AND a.state = 'leased' AND a.expires_at > p_now) < t.required_judgements
                ORDER BY t.id LIMIT 1
                FOR UPDATE OF t SKIP LOCKED;
            IF NOT FOUND THEN
                IF v_after > 0 THEN
                    v_after := 0;  -- nothing above the rater's last task: look at the ones below
                    CONTINUE;
                END IF;
                EXIT;
            END IF;
            -- A fresh statement: it sees leases committed after the candidate query took its snapshot.
            IF (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task)
               + (SELECT COUNT(*) FROM labeling_assignment a
                  WHERE a.task_id = v_task AND a.state = 'leased' AND a.expires_at > p_now) >= v_required THEN
                v_passed := v_passed || v_task;
                CONTINUE;
            END IF;
            RETURN QUERY
                INSERT INTO labeling_assignment (task_id, rater_id, state, leased_at, expires_at, shown_order, skip_reason)
                VALUES (
                    v_task, p_rater, 'leased', p_now, p_now + p_lease,
                    COALESCE((SELECT jsonb_agg(r.response_id ORDER BY random())
                              FROM labeling_taskresponse r WHERE r.task_id = v_task), '[]'::jsonb),
                    ''
                )
                RETURNING *;
            RETURN;
        END LOOP;
    END LOOP;
END;
$$;
"""

SUBMIT = """
CREATE OR REPLACE FUNCTION labeling_judgement_submit(p_assignment bigint, p_now timestamptz, p_row jsonb)
RETURNS TABLE (outcome text, judgement_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_state text;
    v_expires timestamptz;
    v_task bigint;
    v_status text;
    v_required integer;
    v_row labeling_judgement;
BEGIN
    -- Every change to who holds a slot of this task waits on these two locks.
    SELECT a.state, a.expires_at, t.id, t.status, t.required_judgements
        INTO v_state, v_expires, v_task, v_status, v_required
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
    IF (v_expires <= p_now OR v_state = 'expired')
       AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task)
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
        WHERE id = v_task AND status = 'open'
          AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task) >= required_judgements;
    RETURN QUERY SELECT 'created'::text, v_row.id;
END;
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS labeling_lease_next(bigint, bigint, boolean, timestamptz, interval);
DROP FUNCTION IF EXISTS labeling_judgement_submit(bigint, timestamptz, jsonb);
"""


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LEASE_NEXT)
        schema_editor.execute(SUBMIT)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0007_training_runs")]

    operations = [migrations.RunPython(create_functions, drop_functions)]
