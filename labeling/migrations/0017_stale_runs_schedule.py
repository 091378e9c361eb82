"""A Celery beat job, every minute, that marks failed the runs whose worker stopped sending heartbeats, whichever
worker is alive (before, only a worker starting up looked)."""

from django.db import migrations

TASK = "labeling.tasks.training_runs_fail_stale_task"
SCHEDULE_NAME = "Fail runs whose worker stopped"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"task": TASK, "interval": every_minute, "queue": "default", "enabled": True},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0016_sql_functions_from_files"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
