"""A run's life around its execution: cancelling, failing the runs of a worker that died, and the scheduled
check that retrains the reward model when enough new judgements have come in."""

import contextlib
import json
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from labeling import selectors
from labeling.artefacts import run_folder
from labeling.errors import Conflict
from labeling.models import Judgement, Project, TrainingRun, WebhookEvent
from labeling.runs.kinds.reward import reward_run_start
from labeling.runs.outcomes import run_event_emit
from training.runtime import STOP_FILE

ACTIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Ask a run to stop: a queued run is cancelled at once, a running one when its worker next looks."""
    if run.status == TrainingRun.Status.QUEUED:
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        )
    elif run.status == TrainingRun.Status.RUNNING:
        TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    run.refresh_from_db()
    return run


ORPHANED = "The worker running this stopped (it died or was restarted) before the run finished."


def training_runs_fail_orphaned(*, worker: str | None = None, now=None) -> int:
    """Runs left ``running`` by a worker that died: this worker's own (it just restarted) and any whose
    heartbeat is older than the timeout, whichever worker looks (a beat job does every minute). Each is
    marked failed, and its trainer, should one still run somewhere, finds a stop file in its folder and
    stops. Returns how many were marked failed."""
    now = now or timezone.now()
    stale = Q(heartbeat_at__lt=now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)) | Q(heartbeat_at=None)
    if worker:
        stale |= Q(worker=worker)
    failed = 0
    for run in TrainingRun.objects.filter(stale, status=TrainingRun.Status.RUNNING).only("pk", "project", "output_dir"):
        marked = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED, finished_at=now, error=ORPHANED
        )
        if marked and run.output_dir:
            with contextlib.suppress(OSError):  # the folder may be on a machine this one cannot reach
                (run_folder(run) / STOP_FILE).write_text(ORPHANED, encoding="utf-8")
        if marked:
            run_event_emit(run, WebhookEvent.RUN_FAILED)
        failed += marked
    return failed


def _retrain_due(project: Project, last: TrainingRun | None) -> bool:
    """``retrain_after_judgements`` new human judgements since the last reward run started, or (with
    ``retrain_on_drift``) the drift warning, unless a reward run started since the current reward model was
    registered: drift retrains once per current model."""
    wanted = project.retrain_after_judgements
    if wanted > 0:
        judgements = Judgement.objects.filter(task__project=project, source=Judgement.Source.HUMAN)
        if last is not None:
            judgements = judgements.filter(created_at__gt=last.created_at)
        if judgements.count() >= wanted:
            return True
    if not project.retrain_on_drift:
        return False
    agreement = selectors.reward_model_agreement(project=project)
    if agreement.drift is None or not agreement.drift.warning or agreement.reward_model is None:
        return False
    return last is None or last.created_at <= agreement.reward_model.created_at


def reward_retrain_check(*, project: Project) -> TrainingRun | None:
    """Start a reward run when the project has had ``retrain_after_judgements`` new human judgements since its
    last reward run started, or when it retrains on drift and the reward model drifted from the raters; never
    while a reward run is queued or running."""
    runs = TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD)
    if runs.filter(status__in=ACTIVE).exists():
        return None
    last = runs.order_by("-created_at").first()
    if not _retrain_due(project, last):
        return None
    base = (last.base_model if last else "") or "minilm-l6"
    try:
        return reward_run_start(project=project, base_model=base)
    except Conflict:
        return None


def project_retraining_schedule(*, project: Project, every_minutes: int = 60):
    """The project's retraining check as a Celery beat schedule (editable in the admin): enabled while
    ``retrain_after_judgements`` is set, disabled otherwise."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval, _ = IntervalSchedule.objects.get_or_create(every=every_minutes, period=IntervalSchedule.MINUTES)
    schedule, created = PeriodicTask.objects.get_or_create(
        name=f"Retrain the reward model of {project.slug}",
        defaults={
            "task": "labeling.tasks.reward_retrain_check_task",
            "interval": interval,
            "args": json.dumps([project.pk]),
            "queue": "default",
        },
    )
    enabled = project.retrain_after_judgements > 0 or project.retrain_on_drift
    if schedule.enabled != enabled:
        schedule.enabled = enabled
        schedule.save(update_fields=["enabled"])
    return schedule
