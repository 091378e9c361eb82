-- The lease call on PostgreSQL (labeling.services.assignment): the rater's live lease in the project, or a new
-- lease on the first task they have not seen that has a free slot and no open problem report, the candidate row
-- locked FOR UPDATE SKIP LOCKED and its slots counted again in a fresh statement. Free slots = required
-- judgements - human judgements - live leases (the same rule as labeling.selectors.slots_taken_sql). A gold task
-- has no slot limit: every rater of the project may judge it once, since that is how raters are scored.
--
-- This file is the function's source of truth. A migration installs a copy of it (labeling/migrations/sql/):
-- after changing it, add a migration that copies it there and runs it (tests/test_sql_functions.py checks).
-- Tasks go out in id order, or by priority (lower first, unscored tasks last, then by id) where the project's
-- task_order asks for it; the reward models' scoring refreshes the priorities (index task_pick_priority). Either
-- walk goes on from the rater's last task (by id; by priority, from the last task they leased since the last
-- refresh) and looks at the ones before it only when nothing is left after it: those are mostly done.
--
-- It returns at most one row (ROWS 1), and with sequential scans off its plans use the indexes even when they
-- were made while the tables were nearly empty.
CREATE OR REPLACE FUNCTION labeling_lease_next(
    p_project bigint, p_rater bigint, p_want_gold boolean, p_now timestamptz, p_lease interval
) RETURNS SETOF labeling_assignment
LANGUAGE plpgsql VOLATILE ROWS 1 SET enable_seqscan = off AS $$
DECLARE
    v_gold boolean;
    v_after bigint;
    v_passed bigint[];
    v_task bigint;
    v_required integer;
    v_keep_order boolean;
    v_by_priority boolean;
    v_refreshed_at timestamptz;
    v_after_priority double precision;
BEGIN
    -- The lease the rater already holds in this project, if any, unless an open problem report holds its task
    -- back: the lease stays valid for a submission, but the rater moves on.
    RETURN QUERY
        SELECT a.* FROM labeling_assignment a JOIN labeling_comparisontask t ON t.id = a.task_id
        WHERE a.rater_id = p_rater AND t.project_id = p_project AND t.status = 'open'
          AND a.state = 'leased' AND a.expires_at > p_now
          AND NOT EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = t.id AND pr.outcome = 'open')
        ORDER BY a.leased_at LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT p.task_order <> 'fifo', COALESCE(p.priorities_refreshed_at, '-infinity')
        INTO v_by_priority, v_refreshed_at FROM labeling_project p WHERE p.id = p_project;
    FOREACH v_gold IN ARRAY ARRAY[p_want_gold, NOT p_want_gold] LOOP
        v_after := 0;
        IF v_by_priority THEN
            -- The task this rater leased last since the priorities were written, if it has one.
            SELECT t.priority, t.id INTO v_after_priority, v_after FROM labeling_assignment a
                JOIN labeling_comparisontask t ON t.id = a.task_id
                WHERE a.rater_id = p_rater AND t.project_id = p_project AND t.is_gold = v_gold
                  AND a.leased_at >= v_refreshed_at
                ORDER BY a.leased_at DESC LIMIT 1;
            IF v_after_priority IS NULL THEN
                v_after := 0;  -- none, or an unscored one (they come last): from the top
            END IF;
        ELSE
            SELECT a.task_id INTO v_after FROM labeling_assignment a
                JOIN labeling_comparisontask t ON t.id = a.task_id
                WHERE a.rater_id = p_rater AND t.project_id = p_project AND t.is_gold = v_gold
                ORDER BY a.task_id DESC LIMIT 1;
        END IF;
        v_after := COALESCE(v_after, 0);
        v_passed := ARRAY[]::bigint[];
        LOOP
            -- The same candidate query three times, so that each plan walks its index in order from where it starts.
            IF v_by_priority AND v_after > 0 THEN
                SELECT t.id, t.required_judgements, t.keep_order INTO v_task, v_required, v_keep_order
                    FROM labeling_comparisontask t
                    WHERE t.project_id = p_project AND t.status = 'open' AND t.is_gold = v_gold
                      AND (t.priority, t.id) > (v_after_priority, v_after)
                      AND NOT (t.id = ANY (v_passed))
                      AND NOT EXISTS (SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_judgement j WHERE j.task_id = t.id AND j.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = t.id AND pr.outcome = 'open')
                      AND (v_gold OR (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = t.id AND j.source = 'human')
                        + (SELECT COUNT(*) FROM labeling_assignment a
                           WHERE a.task_id = t.id AND a.state = 'leased' AND a.expires_at > p_now) < t.required_judgements)
                    ORDER BY t.priority, t.id LIMIT 1
                    FOR UPDATE OF t SKIP LOCKED;
            ELSIF v_by_priority THEN
                SELECT t.id, t.required_judgements, t.keep_order INTO v_task, v_required, v_keep_order
                    FROM labeling_comparisontask t
                    WHERE t.project_id = p_project AND t.status = 'open' AND t.is_gold = v_gold
                      AND NOT (t.id = ANY (v_passed))
                      AND NOT EXISTS (SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_judgement j WHERE j.task_id = t.id AND j.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = t.id AND pr.outcome = 'open')
                      AND (v_gold OR (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = t.id AND j.source = 'human')
                        + (SELECT COUNT(*) FROM labeling_assignment a
                           WHERE a.task_id = t.id AND a.state = 'leased' AND a.expires_at > p_now) < t.required_judgements)
                    ORDER BY t.priority NULLS LAST, t.id LIMIT 1
                    FOR UPDATE OF t SKIP LOCKED;
            ELSE
                SELECT t.id, t.required_judgements, t.keep_order INTO v_task, v_required, v_keep_order
                    FROM labeling_comparisontask t
                    WHERE t.project_id = p_project AND t.status = 'open' AND t.is_gold = v_gold AND t.id > v_after
                      AND NOT (t.id = ANY (v_passed))
                      AND NOT EXISTS (SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_judgement j WHERE j.task_id = t.id AND j.rater_id = p_rater)
                      AND NOT EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = t.id AND pr.outcome = 'open')
                      AND (v_gold OR (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = t.id AND j.source = 'human')
                        + (SELECT COUNT(*) FROM labeling_assignment a
                           WHERE a.task_id = t.id AND a.state = 'leased' AND a.expires_at > p_now) < t.required_judgements)
                    ORDER BY t.id LIMIT 1
                    FOR UPDATE OF t SKIP LOCKED;
            END IF;
            IF NOT FOUND THEN
                IF v_after > 0 THEN
                    v_after := 0;  -- nothing above the rater's last task: look at the ones below
                    CONTINUE;
                END IF;
                EXIT;
            END IF;
            -- A fresh statement: it sees leases and problem reports committed after the candidate query took its
            -- snapshot.
            IF EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = v_task AND pr.outcome = 'open')
               OR NOT v_gold AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task AND j.source = 'human')
               + (SELECT COUNT(*) FROM labeling_assignment a
                  WHERE a.task_id = v_task AND a.state = 'leased' AND a.expires_at > p_now) >= v_required THEN
                v_passed := v_passed || v_task;
                CONTINUE;
            END IF;
            RETURN QUERY
                INSERT INTO labeling_assignment (task_id, rater_id, state, leased_at, expires_at, shown_order, skip_reason)
                VALUES (
                    v_task, p_rater, 'leased', p_now, p_now + p_lease,
                    -- A new random order for each rater, or the stored one where the task keeps its order.
                    COALESCE((SELECT jsonb_agg(r.response_id ORDER BY CASE WHEN v_keep_order THEN r.position END, random())
                              FROM labeling_taskresponse r WHERE r.task_id = v_task), '[]'::jsonb),
                    ''
                )
                RETURNING *;
            RETURN;
        END LOOP;
    END LOOP;
END;
$$;
