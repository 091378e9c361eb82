"""Prompts and responses keep their safe HTML beside their text, so that serving a task renders nothing.
Imports leave it empty (rendering would slow them several times over); a Celery beat job fills it in. And the
lease function is planned as the one row it returns."""

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
# (A CREATE OR REPLACE of the function resets this: say ROWS 1 there too.)
ONE_ROW = "ALTER FUNCTION labeling_lease_next(bigint, bigint, boolean, timestamptz, interval) ROWS {rows}"


def lease_returns_one_row(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ONE_ROW.format(rows=1))


def lease_returns_many_rows(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ONE_ROW.format(rows=1000))


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
                blank=True, default=list, editable=False, help_text="Each turn as safe HTML, rendered when stored."
            ),
        ),
        migrations.AddField(
            model_name="response",
            name="html",
            field=models.TextField(
                blank=True, default="", editable=False, help_text="The text as safe HTML, rendered when stored."
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
        migrations.RunPython(schedule, unschedule),
        migrations.RunPython(lease_returns_one_row, lease_returns_many_rows),
    ]
