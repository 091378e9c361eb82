"""Prompts and responses keep their safe HTML beside their text, so that serving a task renders nothing.
Imports leave it empty (rendering would slow them several times over); a Celery beat job fills it in. And the
lease and submit functions keep to their indexes."""

from django.db import migrations, models

TASK = "labeling.tasks.stored_html_fill_task"
SCHEDULE_NAME = "Render new prompts and responses"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": TASK, "interval": every_minute, "queue": "default", "enabled": True},
    )


# The lease call now joins the task's content to the lease; a set-returning function is planned as 1,000 rows
# unless told otherwise, which turns the join into full scans of four tables. It returns at most one row.
# Inside both functions every statement looks up a few rows by key, and PL/pgSQL keeps a plan for the life of
# the connection: a plan made while the tables were nearly empty (a new project, or right after a restore)
# scans them whole long after they have grown. With sequential scans off, the plans use the indexes whatever
# the statistics say. (A CREATE OR REPLACE of a function resets these: repeat them there.)
LEASE = "labeling_lease_next(bigint, bigint, boolean, timestamptz, interval)"
SUBMIT = "labeling_judgement_submit(bigint, timestamptz, jsonb)"
TUNE = [f"ALTER FUNCTION {LEASE} ROWS 1", f"ALTER FUNCTION {LEASE} SET enable_seqscan = off",
        f"ALTER FUNCTION {SUBMIT} SET enable_seqscan = off"]  # fmt: skip
UNTUNE = [f"ALTER FUNCTION {LEASE} ROWS 1000", f"ALTER FUNCTION {LEASE} RESET enable_seqscan",
          f"ALTER FUNCTION {SUBMIT} RESET enable_seqscan"]  # fmt: skip


def functions_tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in TUNE:
            schema_editor.execute(statement)


def functions_untune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in UNTUNE:
            schema_editor.execute(statement)


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0012_human_judgements_fill_slots"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="prompt",
            name="messages_html",
            field=models.JSONField(
                blank=True,
                default=list,
                db_default=[],
                editable=False,
                help_text="Each turn as safe HTML, rendered when stored.",
            ),
        ),
        migrations.AddField(
            model_name="response",
            name="html",
            field=models.TextField(
                blank=True,
                default="",
                db_default="",
                editable=False,
                help_text="The text as safe HTML, rendered when stored.",
            ),
        ),
        migrations.AddIndex(
            model_name="prompt",
            index=models.Index(condition=models.Q(messages_html=[]), fields=["id"], name="prompt_html_missing"),
        ),
        migrations.AddIndex(
            model_name="response",
            index=models.Index(condition=models.Q(html=""), fields=["id"], name="response_html_missing"),
        ),
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(condition=models.Q(state="leased"), fields=["rater"], name="assignment_live_by_rater"),
        ),
        migrations.RunPython(schedule, unschedule),
        migrations.RunPython(functions_tune, functions_untune),
    ]
