"""What every run kind's start service shares: the checks of its inputs, and queuing the run on the training
workers once the transaction commits."""

from django.conf import settings
from django.db import IntegrityError, transaction

from labeling.errors import ApplicationError, Conflict
from labeling.models import DatasetSnapshot, ModelVersion, Project, TrainingRun
from labeling.models.runs import RunKind

EXECUTE_TASK = "labeling.tasks.training_run_execute_task"


def model_path(version: ModelVersion) -> str:
    """How the trainer is told of a model version (a folder, or a URL in a remote artefact store)."""
    from labeling.artefacts import model_reference

    return model_reference(version)


def run_queue(run: TrainingRun) -> None:
    """Queue the run's execution on the training workers once the transaction commits (by the task's name:
    the tasks module imports this package, not the other way round), and keep the Celery task id on the run."""

    def send() -> None:
        from config.celery import app

        result = app.send_task(EXECUTE_TASK, args=[run.pk], queue=settings.CELERY_TRAINING_QUEUE)
        TrainingRun.objects.filter(pk=run.pk).update(celery_task_id=result.id)

    transaction.on_commit(send)


def run_create(*, project: Project, kind: RunKind, conflict: str = "", **fields) -> TrainingRun:
    """A queued run, and its execution queued. One run of a kind per project at a time (a database
    constraint): a second one is refused with ``conflict`` or a sentence naming the kind."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(project=project, kind=kind, **fields)
    except IntegrityError:
        label = TrainingRun.Kind(kind).label
        message = conflict or f"A run of this kind ({label}) is already queued or running for this project."
        raise Conflict(message) from None
    run_queue(run)
    return run


def snapshot_for(project: Project, snapshot: DatasetSnapshot | None, kind: str, created_by) -> DatasetSnapshot:
    """The snapshot given (checked), or a new one of the project's data of ``kind``; never an empty one."""
    from labeling.services import dataset_snapshot_create

    if snapshot is None:
        snapshot = dataset_snapshot_create(project=project, kind=kind, created_by=created_by)
    elif snapshot.project_id != project.pk or snapshot.kind != kind:
        raise ApplicationError(f"This run reads a {kind} snapshot of its own project.")
    if snapshot.row_count == 0:
        raise ApplicationError(f"The {kind} snapshot is empty: there is nothing to run on.")
    return snapshot


def own_model(project: Project, version: ModelVersion | None, kind: str) -> ModelVersion | None:
    """The version given (checked), or else the project's current one of that kind."""
    if version is None:
        return ModelVersion.objects.filter(project=project, kind=kind, is_current=True).first()
    if version.project_id != project.pk or version.kind != kind:
        raise ApplicationError(f"Pick a {ModelVersion.Kind(kind).label.lower()} of this project.")
    return version


def require_positive(**values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ApplicationError(f"{name.replace('_', ' ').capitalize()} must be positive.")


def require_max_prompts(max_prompts: int | None) -> None:
    if max_prompts is not None and max_prompts < 0:
        raise ApplicationError("Max prompts must be 0 (all) or more.")
