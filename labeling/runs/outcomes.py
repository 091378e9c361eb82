"""How a run ends: succeeded (with the model version it produced, and whether that became current), or
stopped (failed or cancelled) with its progress where it stopped."""

import hashlib
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from config.version import code_version
from labeling.models import ModelVersion, TrainingRun, WebhookEvent
from labeling.runs.logs import log_tail
from labeling.services.routing import model_in_loop_refresh_later
from labeling.services.webhooks import webhook_event_emit
from training.runtime import read_result


def model_version_make_current(*, version: ModelVersion) -> ModelVersion:
    """The project's current model of its kind (reward model, policy): the one later runs use. A new current
    reward model then scores the open tasks' responses (the model in the loop)."""
    with transaction.atomic():
        ModelVersion.objects.filter(project=version.project, kind=version.kind, is_current=True).exclude(
            pk=version.pk
        ).update(is_current=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_current=True)
        if version.kind == ModelVersion.Kind.REWARD:
            model_in_loop_refresh_later(project=version.project)
        version.refresh_from_db()
        webhook_event_emit(
            project=version.project_id, event=WebhookEvent.MODEL_CURRENT, data=lambda: version_event(version)
        )
    return version


def version_event(version: ModelVersion) -> dict:
    """What a webhook hears of a model version."""
    return {
        "model_version_id": version.pk, "name": version.name, "kind": version.kind, "base_model": version.base_model,
        "is_current": version.is_current, "content_hash": version.content_hash, "parent_id": version.parent_id,
        "training_run_id": version.training_run_id, "snapshot_id": version.snapshot_id, "metrics": version.metrics,
    }  # fmt: skip


def run_event_emit(run: TrainingRun, event: str) -> None:
    """A run's webhook event, with the run as stored."""

    def data() -> dict:
        stored = TrainingRun.objects.get(pk=run.pk)
        return {
            "run_id": stored.pk, "kind": stored.kind, "status": stored.status, "base_model": stored.base_model,
            "started_at": stored.started_at.isoformat() if stored.started_at else None,
            "finished_at": stored.finished_at.isoformat() if stored.finished_at else None,
            "error": stored.error, "metrics": stored.metrics,
        }  # fmt: skip

    webhook_event_emit(project=run.project_id, event=event, data=data)


def files_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            with open(path, "rb") as content:
                for block in iter(lambda: content.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@transaction.atomic
def model_version_register(run: TrainingRun, out_dir: Path, now) -> ModelVersion:
    """The model a run saved, as a version of its kind with its lineage; the run succeeded."""
    result = read_result(out_dir)
    model_dir = Path(result["model_dir"])
    version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelVersion.Kind.REWARD if run.kind == TrainingRun.Kind.REWARD else ModelVersion.Kind.POLICY,
        name=f"{run.kind}-{run.pk}",
        base_model=run.base_model,
        artefact_path=f"{run.output_dir}/{model_dir.relative_to(out_dir).as_posix()}",
        content_hash=files_hash(model_dir),
        metrics=result["metrics"],
        parent=run.parent_model,
        snapshot=run.snapshot,
        training_run=run,
        code_version=code_version(),
    )
    webhook_event_emit(project=run.project_id, event=WebhookEvent.MODEL_REGISTERED, data=lambda: version_event(version))
    run_succeeded(run, out_dir, now, {"promotion": promotion_decide(version, run)})
    version.refresh_from_db()
    return version


def promotion_decide(version: ModelVersion, run: TrainingRun) -> str:
    """Whether a new model becomes the project's current one, and why, in a sentence. Any first model of its
    kind does. A later reward model does when the project promotes better ones and its held-out accuracy beats
    the current model's on the same held-out prompts (measured by the run, ``baseline_eval_accuracy``)."""
    project = version.project
    current = (
        ModelVersion.objects.filter(project=project, kind=version.kind, is_current=True).exclude(pk=version.pk).first()
    )
    kind = version.get_kind_display().lower()
    if current is None:
        model_version_make_current(version=version)
        return f"Made current: the project had no current {kind}."
    if version.kind != ModelVersion.Kind.REWARD:
        return f"{current.name} stays the current {kind}; make this one current on the model list."
    if not project.promote_better_reward_model:
        return f"{current.name} stays current: the project does not promote better reward models on its own."
    metrics = version.metrics or {}
    accuracy, baseline = metrics.get("eval_accuracy"), metrics.get("baseline_eval_accuracy")
    if accuracy is None:
        return f"{current.name} stays current: this run held out no prompts to compare the two on."
    if metrics.get("baseline_error"):
        return f"{current.name} stays current: it could not be evaluated here ({metrics['baseline_error']})."
    if (run.config or {}).get("baseline_model_id") != current.pk or baseline is None:
        return f"{current.name} stays current: this run did not measure it on the same held-out prompts."
    pairs = metrics.get("eval_pairs", 0)
    versus = f"{accuracy:.3f} against {baseline:.3f} on the same {pairs} held-out pairs"
    if accuracy <= baseline:
        return f"{current.name} stays current: {versus}."
    model_version_make_current(version=version)
    return f"Made current in place of {current.name}: {versus}."


def run_succeeded(run: TrainingRun, out_dir: Path, now, extra: dict) -> None:
    """Mark the run succeeded with the trainer's closing metrics and ``extra`` (what was stored of its output)."""
    result = read_result(out_dir)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, progress=1.0, finished_at=now, heartbeat_at=now,
        log_tail=log_tail(out_dir / "log.txt"),
        metrics={**(run.metrics or {}), **result["metrics"], **extra, "phase": "done"},
    )  # fmt: skip
    run_event_emit(run, WebhookEvent.RUN_FINISHED)


def run_end(run: TrainingRun, status: str, *, error: str = "", log: Path | None = None) -> None:
    """End a run that did not succeed: its progress stays where it stopped, below 100%."""
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=status, error=error, finished_at=now, heartbeat_at=now, log_tail=log_tail(log) if log else "",
        progress=min(run.progress, 0.99),
    )  # fmt: skip
    if status == TrainingRun.Status.FAILED:
        run_event_emit(run, WebhookEvent.RUN_FAILED)
