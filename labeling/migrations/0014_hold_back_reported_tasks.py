"""Reported tasks are held back: while a task has an open problem report, the lease call hands it to nobody.

A report now has an outcome (open, resolved, dismissed) instead of a "resolved" flag, with who closed it and
when; reports that were marked resolved become resolved (closer and time unknown), and going back, a dismissed
report is marked resolved (closed either way). A partial index holds the open reports only, and the lease
function of migration 0012 (tuned by 0013) checks it for the rater's current lease, for each candidate task,
and again in the fresh statement after the candidate's row lock. The submit function is unchanged: a lease
taken before the report is still accepted.
"""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

previous = importlib.import_module("labeling.migrations.0012_human_judgements_fill_slots")
tuning = importlib.import_module("labeling.migrations.0013_stored_html")

# Migration 0012's definition (0008's, counting human judgements only) with three checks for open reports.
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
                  AND NOT EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = t.id AND pr.outcome = 'open')
                  AND (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = t.id AND j.source = 'human')
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
            -- A fresh statement: it sees leases and problem reports committed after the candidate query took its
            -- snapshot.
            IF EXISTS (SELECT 1 FROM labeling_taskproblemreport pr WHERE pr.task_id = v_task AND pr.outcome = 'open')
               OR (SELECT COUNT(*) FROM labeling_judgement j WHERE j.task_id = v_task AND j.source = 'human')
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


def reports_outcome_from_resolved(apps, schema_editor):
    TaskProblemReport = apps.get_model("labeling", "TaskProblemReport")
    TaskProblemReport.objects.filter(resolved=True).update(outcome="resolved")


def reports_resolved_from_outcome(apps, schema_editor):
    TaskProblemReport = apps.get_model("labeling", "TaskProblemReport")
    TaskProblemReport.objects.exclude(outcome="open").update(resolved=True)


def lease_function_holds_back(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LEASE_NEXT)
        tuning.functions_tune(apps, schema_editor)  # CREATE OR REPLACE reset the row estimate and the settings


def lease_function_restore(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(previous.human_only(previous.functions.LEASE_NEXT))
        tuning.functions_tune(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0013_stored_html"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="taskproblemreport",
            name="outcome",
            field=models.CharField(
                choices=[("open", "Open"), ("resolved", "Resolved"), ("dismissed", "Dismissed")],
                default="open",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="taskproblemreport",
            name="closed_by",
            field=models.ForeignKey(
                blank=True,
                help_text="The admin who resolved or dismissed the report.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="taskproblemreport",
            name="closed_at",
            field=models.DateTimeField(blank=True, help_text="When the report was resolved or dismissed.", null=True),
        ),
        migrations.RunPython(reports_outcome_from_resolved, reports_resolved_from_outcome),
        migrations.RemoveField(model_name="taskproblemreport", name="resolved"),
        migrations.AddIndex(
            model_name="taskproblemreport",
            index=models.Index(
                condition=models.Q(("outcome", "open")), fields=["task"], name="problem_report_open_by_task"
            ),
        ),
        migrations.AddConstraint(
            model_name="taskproblemreport",
            constraint=models.CheckConstraint(
                condition=models.Q(("outcome__in", ["open", "resolved", "dismissed"])),
                name="problem_report_outcome_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="taskproblemreport",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("outcome", "open"), _negated=True),
                    models.Q(("closed_at__isnull", True), ("closed_by__isnull", True)),
                    _connector="OR",
                ),
                name="problem_report_open_not_closed",
                violation_error_message="An open report has no closer and no closing time.",
            ),
        ),
        migrations.RunPython(lease_function_holds_back, lease_function_restore),
    ]
