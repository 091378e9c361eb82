"""Celery tasks: thin wrappers that load rows by id, call one function and return what it reports."""

from celery import shared_task
from celery.signals import worker_ready

from labeling import runs, selectors, services
from labeling.models import Project


@shared_task
def assignment_expire_stale_task() -> int:
    """Return abandoned leases to the pool (scheduled every minute by Celery beat)."""
    return services.assignment_expire_stale()


@shared_task
def stored_html_fill_task() -> int:
    """Render the prompts and responses that imports stored without HTML (scheduled every minute)."""
    return services.stored_html_fill()


@shared_task(bind=True, acks_late=True)
def training_run_execute_task(self, run_id: int) -> str:
    """Run the trainer for a queued run (queue ``training``); returns the run's final status."""
    return runs.training_run_execute(run_id, worker=self.request.hostname)


@shared_task
def training_runs_fail_stale_task() -> int:
    """Mark failed the runs whose worker stopped sending heartbeats (scheduled every minute by Celery beat)."""
    return runs.training_runs_fail_orphaned()


@shared_task(bind=True)
def import_job_execute_task(self, job_id: int) -> str:
    """Import an uploaded file (queue ``default``); returns the job's final status."""
    return services.import_job_execute(job_id, worker=self.request.hostname or "")


@shared_task
def import_jobs_fail_stale_task() -> int:
    """Mark failed the imports whose worker stopped (scheduled every minute by Celery beat)."""
    return services.import_jobs_fail_stale()


@shared_task(bind=True, acks_late=True, max_retries=None)
def webhook_deliver_task(self, delivery_id: int, attempts: int = 0) -> str:
    """POST one webhook delivery that has made ``attempts`` attempts; while it is pending after this one, try again
    after its back-off. A delivery that another task took over (its attempts differ) ends this one."""
    delivery = services.webhook_delivery_attempt(delivery_id=delivery_id, attempts=attempts)
    if delivery.status == "pending" and delivery.attempts == attempts + 1 and delivery.next_attempt_at is not None:
        raise self.retry(eta=delivery.next_attempt_at, args=(delivery_id, delivery.attempts))
    return delivery.status


@shared_task
def webhooks_tick_task() -> int:
    """Announce new judgements and completed tasks to webhooks, in batches (scheduled every 10 s by beat)."""
    return services.webhooks_tick()


@shared_task
def reward_retrain_check_task(project_id: int) -> int | None:
    """A project's retraining schedule: start a reward run if enough new judgements have arrived."""
    project = Project.objects.filter(pk=project_id).first()
    run = runs.reward_retrain_check(project=project) if project else None
    return run.pk if run else None


@shared_task
def model_in_loop_refresh_task(project_id: int) -> int | None:
    """A reward model became current, or the task order changed: score the open tasks' responses with the
    reward models in the loop, or (nothing to score) write the task priorities again. The score run's id, if
    one started."""
    project = Project.objects.filter(pk=project_id).first()
    run = runs.open_responses_scoring_next(project=project, refresh=True) if project else None
    return run.pk if run else None


@shared_task
def open_responses_score_due_task() -> list[int]:
    """Score new responses of open tasks, in every project with a current reward model (scheduled every
    minute). The ids of the score runs started."""
    started = [runs.open_responses_scoring_next(project=project) for project in selectors.projects_in_the_loop()]
    return [run.pk for run in started if run is not None]


@shared_task
def rater_stats_refresh_task() -> list[int]:
    """Audit again the raters of every project with new judgements (scheduled every five minutes)."""
    return services.rater_stats_refresh_due()


@shared_task
def rater_stats_refresh_project_task(project_id: int) -> int:
    """Audit one project's raters and scan its review queue now (the dashboard's "Refresh" button); how many
    raters."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return 0
    services.review_queue_refresh(project=project)
    return services.rater_stats_refresh(project=project)


@worker_ready.connect
def fail_orphaned_runs(sender=None, **kwargs) -> None:
    """When a worker starts, runs and imports that a dead worker left 'running' are marked failed."""
    hostname = getattr(sender, "hostname", None)
    runs.training_runs_fail_orphaned(worker=hostname)
    services.import_jobs_fail_stale(worker=hostname)
