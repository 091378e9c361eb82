"""Celery tasks through a real worker process: the broker from the settings (Redis in CI, the filesystem
broker by default) and the test database (PostgreSQL in CI)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from labeling.models import Assignment, Prompt, Response
from labeling.tasks import assignment_expire_stale_task, stored_html_fill_task
from tests.worker import celery_worker


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_expires_abandoned_leases_in_the_database(make_task, rater, tmp_path):
    now = timezone.now()
    abandoned = Assignment.objects.create(
        task=make_task(), rater=rater, leased_at=now - timedelta(hours=1), expires_at=now - timedelta(minutes=1)
    )
    held = Assignment.objects.create(task=make_task(), rater=rater, leased_at=now, expires_at=now + timedelta(hours=1))
    with celery_worker(tmp_path) as worker:
        result = assignment_expire_stale_task.apply_async(queue=worker.queue)
        assert worker.result(result) == 1

    abandoned.refresh_from_db()
    held.refresh_from_db()
    assert (abandoned.state, held.state) == (Assignment.State.EXPIRED, Assignment.State.LEASED)
    # The worker recorded the outcome in the database through django-celery-results.
    stored = TaskResult.objects.get(task_id=result.id)
    assert (stored.status, stored.task_name) == ("SUCCESS", "labeling.tasks.assignment_expire_stale_task")


def test_the_lease_expiry_schedule_is_in_the_database_for_beat(db):
    from django_celery_beat.models import PeriodicTask

    schedule = PeriodicTask.objects.get(name="Return abandoned leases")
    assert schedule.task == assignment_expire_stale_task.name
    assert (schedule.interval.every, schedule.interval.period, schedule.enabled) == (60, "seconds", True)


def test_the_html_render_job_is_scheduled_every_minute_and_renders_what_imports_left(db, make_task):
    from django_celery_beat.models import PeriodicTask

    schedule = PeriodicTask.objects.get(name="Render new prompts and responses")
    assert schedule.task == stored_html_fill_task.name
    assert (schedule.interval.every, schedule.interval.period, schedule.enabled) == (60, "seconds", True)
    task = make_task(k=3)
    assert stored_html_fill_task() == 4
    assert not Response.objects.filter(tasks=task, html="").exists()
    assert Prompt.objects.get(pk=task.prompt_id).messages_html[0].startswith("<!--md:")


def test_rows_written_in_plain_sql_without_html_count_as_not_rendered(db, make_task):
    from django.db import connection

    task = make_task(k=2)
    stored_html_fill_task()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO labeling_response (prompt_id, text, origin, metadata, created_at) "
            "VALUES (%s, %s, 'human', '{}', CURRENT_TIMESTAMP)",
            [task.prompt_id, "*plain*"],
        )
    assert stored_html_fill_task() == 1
    assert Response.objects.get(text="*plain*").html.endswith("<p><em>plain</em></p>\n")
