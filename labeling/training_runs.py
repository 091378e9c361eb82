"""Training runs and model versions: starting a run, running the trainer in a subprocess on a GPU worker,
following its progress, and registering what it produced.

A run is started by a service (``reward_run_start``) that freezes the data it will read as a snapshot and
queues ``training_run_execute_task`` on the ``training`` queue once the transaction commits. The task runs
``accelerate launch -m training <kind> ...`` as a subprocess, so that a crash or an out-of-memory kill
cannot take the worker down and GPU memory is freed when it ends. It copies the trainer's JSON metrics
lines into the run as they come (progress, ETA, loss, accuracy, the curves), and on success registers a
``ModelVersion`` with its lineage. Any other ending marks the run failed with the tail of its log and
changes nothing else. A worker that dies leaves its run ``running``: the next worker to start marks it
failed once its heartbeat is stale.
"""

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from config.version import code_version
from labeling.errors import ApplicationError, Conflict
from labeling.models import DatasetSnapshot, Judgement, ModelVersion, Project, TrainingRun, User
from training.config import PPOConfig, SFTConfig
from training.runtime import read_error

ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 4000
ACTIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
# The trainer's log is read by people on the run page: no download and loading bars, unbuffered output.
TRAINER_ENVIRONMENT = {
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def _artefacts() -> Path:
    return Path(settings.ARTEFACTS_DIR)


# --- starting, cancelling -----------------------------------------------------------------------------------


@transaction.atomic
def reward_run_start(
    *,
    project: Project,
    snapshot: DatasetSnapshot | None = None,
    base_model: str = "minilm-l6",
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    lora: bool = False,
    human_weight: float = 1.0,
    ai_weight: float = 1.0,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue a reward-model run on the project's rankings: a new snapshot of them (human and AI judgements,
    gold tasks included) unless one is given. Refused while another reward run is queued or running."""
    from labeling.services import dataset_snapshot_create
    from labeling.tasks import training_run_execute_task

    if snapshot is None:
        snapshot = dataset_snapshot_create(project=project, kind="ranking", created_by=created_by)
    elif snapshot.project_id != project.pk or snapshot.kind not in ("ranking", "preference"):
        raise ApplicationError("A reward run reads a ranking or preference snapshot of its own project.")
    if snapshot.row_count == 0:
        raise ApplicationError("The snapshot holds no judgements to train on.")
    if epochs <= 0 or learning_rate <= 0:
        raise ApplicationError("Epochs and the learning rate must be positive.")
    if human_weight < 0 or ai_weight < 0 or human_weight + ai_weight == 0:
        raise ApplicationError("Source weights must be 0 or more, and not both 0.")
    # The current reward model is evaluated on the new run's held-out prompts, so the two compare fairly.
    current = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, is_current=True).first()
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project=project,
                kind=TrainingRun.Kind.REWARD,
                snapshot=snapshot,
                base_model=base_model,
                config={
                    "epochs": epochs,
                    "learning_rate": learning_rate,
                    "lora": lora,
                    "human_weight": human_weight,
                    "ai_weight": ai_weight,
                    "baseline_model_id": current.pk if current else None,
                },  # fmt: skip
                created_by=created_by,
            )
    except IntegrityError:
        raise Conflict("A reward run is already queued or running for this project.") from None
    transaction.on_commit(
        lambda: training_run_execute_task.apply_async(args=[run.pk], queue=settings.CELERY_TRAINING_QUEUE)
    )
    return run


def _create_run(*, project: Project, kind: str, **fields) -> TrainingRun:
    """A queued run, and its task queued on the training workers once the transaction commits."""
    from labeling.tasks import training_run_execute_task

    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(project=project, kind=kind, **fields)
    except IntegrityError:
        label = TrainingRun.Kind(kind).label
        raise Conflict(f"A run of this kind ({label}) is already queued or running for this project.") from None
    transaction.on_commit(
        lambda: training_run_execute_task.apply_async(args=[run.pk], queue=settings.CELERY_TRAINING_QUEUE)
    )
    return run


def _snapshot_of(project: Project, snapshot: DatasetSnapshot | None, kind: str, created_by) -> DatasetSnapshot:
    from labeling.services import dataset_snapshot_create

    if snapshot is None:
        snapshot = dataset_snapshot_create(project=project, kind=kind, created_by=created_by)
    elif snapshot.project_id != project.pk or snapshot.kind != kind:
        raise ApplicationError(f"This run reads a {kind} snapshot of its own project.")
    if snapshot.row_count == 0:
        raise ApplicationError(f"The {kind} snapshot is empty: there is nothing to run on.")
    return snapshot


def _own_model(project: Project, version: ModelVersion | None, kind: str) -> ModelVersion | None:
    """The version given (checked), or else the project's current one of that kind."""
    if version is None:
        return ModelVersion.objects.filter(project=project, kind=kind, is_current=True).first()
    if version.project_id != project.pk or version.kind != kind:
        raise ApplicationError(f"Pick a {ModelVersion.Kind(kind).label.lower()} of this project.")
    return version


def _positive(**values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ApplicationError(f"{name.replace('_', ' ').capitalize()} must be positive.")


@transaction.atomic
def sft_run_start(
    *,
    project: Project,
    snapshot: DatasetSnapshot | None = None,
    base_model: str = "smollm2-135m-instruct",
    parent: ModelVersion | None = None,
    epochs: float = SFTConfig.epochs,
    learning_rate: float = SFTConfig.learning_rate,
    batch_size: int = SFTConfig.batch_size,
    lora: bool = False,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue supervised fine-tuning on the project's demonstrations (a new ``sft`` snapshot unless one is
    given), starting from ``parent`` (a policy of the project) or else from ``base_model``."""
    if parent is not None:
        parent = _own_model(project, parent, ModelVersion.Kind.POLICY)
    _positive(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size)
    snapshot = _snapshot_of(project, snapshot, "sft", created_by)
    return _create_run(
        project=project, kind=TrainingRun.Kind.SFT, snapshot=snapshot, parent_model=parent,
        base_model=parent.name if parent else base_model, created_by=created_by,
        config={"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "lora": lora},
    )  # fmt: skip


@transaction.atomic
def ppo_run_start(
    *,
    project: Project,
    reward_model: ModelVersion | None = None,
    policy: ModelVersion | None = None,
    base_model: str = "smollm2-135m-instruct",
    snapshot: DatasetSnapshot | None = None,
    kl_coef: float = PPOConfig.kl_coef,
    steps: int = PPOConfig.steps,
    learning_rate: float = PPOConfig.learning_rate,
    batch_size: int = PPOConfig.batch_size,
    ppo_epochs: int = PPOConfig.ppo_epochs,
    max_new_tokens: int = PPOConfig.max_new_tokens,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue PPO of ``policy`` (default: the project's current policy, else ``base_model``) against
    ``reward_model`` (default: the current reward model) on the project's prompts (a new ``prompts``
    snapshot unless one is given)."""
    reward_model = _own_model(project, reward_model, ModelVersion.Kind.REWARD)
    if reward_model is None:
        raise ApplicationError("PPO needs a reward model: train one and make it current, or pick one.")
    policy = _own_model(project, policy, ModelVersion.Kind.POLICY)
    _positive(kl_coef=kl_coef, steps=steps, learning_rate=learning_rate, batch_size=batch_size,
              ppo_epochs=ppo_epochs, max_new_tokens=max_new_tokens)  # fmt: skip
    snapshot = _snapshot_of(project, snapshot, "prompts", created_by)
    config = {"kl_coef": kl_coef, "steps": steps, "learning_rate": learning_rate, "batch_size": batch_size,
              "mini_batch_size": batch_size, "ppo_epochs": ppo_epochs, "max_new_tokens": max_new_tokens}  # fmt: skip
    return _create_run(
        project=project, kind=TrainingRun.Kind.PPO, snapshot=snapshot, parent_model=policy,
        reward_model=reward_model, base_model=policy.name if policy else base_model, config=config,
        created_by=created_by,
    )  # fmt: skip


@transaction.atomic
def generate_run_start(
    *,
    project: Project,
    policy: ModelVersion | None = None,
    snapshot: DatasetSnapshot | None = None,
    samples: int = 2,
    max_prompts: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue ``policy`` (default: the current policy) writing ``samples`` responses to each prompt of a
    ``prompts`` snapshot (a new one of every prompt unless given), or to ``max_prompts`` of them drawn at
    random. When it ends, each prompt gets a comparison task mixing the new responses with earlier ones."""
    policy = _own_model(project, policy, ModelVersion.Kind.POLICY)
    if policy is None:
        raise ApplicationError("Generating needs a policy: run SFT or PPO and make one current, or pick one.")
    _positive(samples=samples, max_new_tokens=max_new_tokens, temperature=temperature)
    if max_prompts is not None and max_prompts < 0:
        raise ApplicationError("Max prompts must be 0 (all) or more.")
    if samples > project.responses_per_task:
        raise ApplicationError(f"At most {project.responses_per_task} new responses per prompt fit in one task.")
    snapshot = _snapshot_of(project, snapshot, "prompts", created_by)
    return _create_run(
        project=project, kind=TrainingRun.Kind.GENERATE, snapshot=snapshot, parent_model=policy,
        base_model=policy.name, created_by=created_by,
        config={"samples": samples, "max_new_tokens": max_new_tokens, "temperature": temperature,
                "max_prompts": max_prompts or 0},
    )  # fmt: skip


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


def training_runs_fail_orphaned(*, worker: str | None = None, now=None) -> int:
    """Runs left ``running`` by a worker that died: this worker's own (it just restarted) and any whose
    heartbeat is older than the timeout. Returns how many were marked failed."""
    now = now or timezone.now()
    stale = Q(heartbeat_at__lt=now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)) | Q(heartbeat_at=None)
    if worker:
        stale |= Q(worker=worker)
    return TrainingRun.objects.filter(stale, status=TrainingRun.Status.RUNNING).update(
        status=TrainingRun.Status.FAILED,
        finished_at=now,
        error="The worker running this stopped (it died or was restarted) before the run finished.",
    )


def model_version_make_current(*, version: ModelVersion) -> ModelVersion:
    """The project's current model of its kind (reward model, policy): the one later runs use."""
    with transaction.atomic():
        ModelVersion.objects.filter(project=version.project, kind=version.kind, is_current=True).exclude(
            pk=version.pk
        ).update(is_current=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_current=True)
    version.refresh_from_db()
    return version


def reward_retrain_check(*, project: Project) -> TrainingRun | None:
    """Start a reward run when the project has had ``retrain_after_judgements`` new human judgements
    since its last reward run started; never while one is queued or running."""
    wanted = project.retrain_after_judgements
    if wanted <= 0:
        return None
    runs = TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD)
    if runs.filter(status__in=ACTIVE).exists():
        return None
    last = runs.order_by("-created_at").first()
    judgements = Judgement.objects.filter(task__project=project, source=Judgement.Source.HUMAN)
    if last is not None:
        judgements = judgements.filter(created_at__gt=last.created_at)
    if judgements.count() < wanted:
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
    enabled = project.retrain_after_judgements > 0
    if schedule.enabled != enabled:
        schedule.enabled = enabled
        schedule.save(update_fields=["enabled"])
    return schedule


# --- running ------------------------------------------------------------------------------------------------


def _model_path(version: ModelVersion) -> str:
    return str(_artefacts() / version.artefact_path)


def _options(config: dict, names: tuple[str, ...]) -> list[str]:
    return [part for name in names if name in config for part in (f"--{name.replace('_', '-')}", str(config[name]))]


def trainer_command(run: TrainingRun, out_dir: Path) -> list[str]:
    """``accelerate launch -m training <kind> ...``: one process on a CPU or a GPU by default, or whatever
    ``ACCELERATE_CONFIG_FILE`` describes (several GPUs, DeepSpeed, several nodes)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if settings.ACCELERATE_CONFIG_FILE:
        launch += ["--config_file", settings.ACCELERATE_CONFIG_FILE]
    else:
        launch += ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    config = run.config or {}
    data = str(_artefacts() / run.snapshot.path) if run.snapshot else ""
    common = ["--out", str(out_dir), "--metrics", str(out_dir / "metrics.jsonl"),
              "--cache-dir", str(settings.MODEL_CACHE_DIR)]  # fmt: skip
    start_from = _model_path(run.parent_model) if run.parent_model else run.base_model
    if run.kind == TrainingRun.Kind.REWARD:
        command = [
            "reward", "--data", data, *common, "--model", run.base_model,
            "--epochs", str(config.get("epochs", 1.0)), "--learning-rate", str(config.get("learning_rate", 5e-5)),
            *_options(config, ("max_length", "prompts_per_batch", "logging_steps", "eval_fraction", "human_weight",
                               "ai_weight")),
        ]  # fmt: skip
        baseline = ModelVersion.objects.filter(pk=config.get("baseline_model_id")).first()
        if baseline is not None:
            command += ["--baseline", _model_path(baseline)]
    elif run.kind == TrainingRun.Kind.SFT:
        command = [
            "sft", "--data", data, *common, "--model", start_from,
            *_options(config, ("epochs", "learning_rate", "batch_size", "max_length", "logging_steps")),
        ]  # fmt: skip
    elif run.kind == TrainingRun.Kind.PPO:
        command = [
            "ppo", "--prompts", data, *common, "--policy", start_from, "--reward-model", _model_path(run.reward_model),
            *_options(config, ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "learning_rate", "kl_coef",
                               "max_new_tokens", "temperature", "save_every", "seed", "missing_eos",
                               "missing_eos_penalty")),
        ]  # fmt: skip
    elif run.kind == TrainingRun.Kind.GENERATE:
        command = [
            "generate", "--prompts", data, *common, "--model", start_from,
            *_options(config, ("samples", "max_prompts", "max_new_tokens", "temperature", "batch_size", "seed")),
        ]  # fmt: skip
    elif run.kind == TrainingRun.Kind.CRITIQUE:
        command = [
            "critique", "--prompts", data, "--principles", str(out_dir / "principles.json"),
            "--few-shot", str(out_dir / "few_shot.txt"), *common,
            "--model", start_from,
            *_options(config, ("rounds", "max_prompts", "max_new_tokens", "temperature", "seed")),
        ]  # fmt: skip
    elif run.kind == TrainingRun.Kind.AI_FEEDBACK:
        command = ["feedback", "--comparisons", str(out_dir / "comparisons.jsonl"), *common, "--model", start_from]
        if config.get("chain_of_thought"):
            command.append("--chain-of-thought")
    else:
        raise ApplicationError(f"No trainer runs '{run.get_kind_display()}' yet.")
    if config.get("lora"):
        command.append("--lora")
    return [*launch, "-m", "training", *command]


class _MetricsFollower:
    """Reads the JSON lines the trainer appends, a whole line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as metrics:
            metrics.seek(self.offset)
            data = metrics.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


ANSI_ESCAPE = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # operating-system commands (terminal titles, links)
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # colours, cursor moves, erasing
    r"|\x1b[()][0-9A-B]"  # character sets
    r"|\x1b[@-Z\\-_]"  # the rest of the two-character escapes
)


def clean_log(text: str) -> str:
    """A log as a person should read it: no terminal colour codes, and each progress bar (a line redrawn with
    carriage returns) only in its last state."""
    text = ANSI_ESCAPE.sub("", text)
    lines = []
    for line in text.split("\n"):
        redraws = [part for part in line.split("\r") if part.strip()]
        lines.append(redraws[-1] if redraws else line.replace("\r", ""))
    return "\n".join(lines)


def _log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a log, cleaned (``clean_log``), at most ``chars`` characters from a line start."""
    if not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(max(0, path.stat().st_size - 8 * chars))  # progress bars shrink a lot when cleaned
        text = clean_log(log.read().decode("utf-8", errors="replace"))
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return tail[tail.find("\n") + 1 :] if "\n" in tail else tail


def _record_progress(run: TrainingRun, lines: list[dict], now) -> None:
    """Fold the trainer's new metrics lines into the run (``training.runtime`` describes them). Phase and
    progress lines move the phase, the progress and the time left; every other line is a point of the curves.
    Progress stays below 1 until the run has succeeded."""
    metrics = dict(run.metrics or {})
    progress = run.progress
    points = []
    for line in lines:
        if "progress" in line:
            progress = min(0.99, float(line["progress"]))
        if "phase" in line:
            metrics["phase"] = line["phase"]
        if line.get("event") == "phase":
            metrics["phase_progress"] = 0.0
        elif "phase_progress" in line:
            metrics["phase_progress"] = line["phase_progress"]
        if "eta_s" in line:
            metrics["eta_s"], metrics["eta_at"] = line["eta_s"], line.get("time")
        elif line.get("phase") != "training":
            metrics.pop("eta_s", None)
        if line.get("event") in ("phase", "progress"):
            metrics.update({key: line[key] for key in ("responses", "chains", "labels") if key in line})
            continue
        if line.get("event") == "error":  # the failure is told by failure_message, from the error files
            continue
        metrics.update({key: value for key, value in line.items() if isinstance(value, int | float | str)})
        points.append(line)
    history = [*(run.history or []), *points]
    TrainingRun.objects.filter(pk=run.pk).update(metrics=metrics, progress=progress, history=history, heartbeat_at=now)
    run.metrics, run.progress, run.history = metrics, progress, history


def _stop(process: subprocess.Popen) -> None:
    """End the trainer and everything it started (accelerate spawns the training process)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


LAUNCHER_EXIT = re.compile(
    r"returned non-zero exit status (?P<code>-?\d+)"  # accelerate's launcher, one process
    r"|died with <Signals\.(?P<signal>\w+): \d+>"  # the same, killed by a signal
    r"|exitcode\s*:\s*(?P<rank>-?\d+)"  # torchrun, several processes
)
EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?(?P<type>[A-Z]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<message>.*))?$"
)


def _exit(returncode: int, log_text: str) -> str:
    """How the trainer ended, in words. ``accelerate launch`` exits with 1 whatever the trainer's exit was and
    names the real one in its own error: read it from there."""
    signal_name, code = None, returncode
    for match in LAUNCHER_EXIT.finditer(log_text):
        if match["signal"]:
            signal_name = match["signal"]
        else:
            code = int(match["code"] or match["rank"])
            signal_name = signal.Signals(-code).name if code < 0 else None
    if signal_name is None and returncode < 0:
        signal_name = signal.Signals(-returncode).name
    if signal_name:
        hint = " (the kernel kills a process that runs out of memory this way)" if signal_name == "SIGKILL" else ""
        return f"the trainer was killed by {signal_name}{hint}"
    return f"the trainer exited with code {code}"


LAUNCHER_ERRORS = ("CalledProcessError", "ChildFailedError")  # accelerate's and torchrun's, about the trainer


def _last_exception(log_text: str) -> str:
    """The last ``SomeError: message`` line of a traceback in the log that is not a launcher's own; else the last
    line the trainer wrote (an argument error, "Killed")."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = EXCEPTION_LINE.match(line)
        if match and match["type"] not in LAUNCHER_ERRORS:
            return line
    launcher = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), len(lines))
    return lines[launcher - 1] if launcher else ""


def failure_message(out_dir: Path, returncode: int) -> str:
    """Why a run failed: the trainer's own last exception (its type, message and the phase it was in, from
    ``error.json``, else from the log), then how the process ended."""
    log_text = _log_tail(out_dir / "log.txt", chars=16 * LOG_TAIL_CHARS)
    error = read_error(out_dir)
    ending = _exit(returncode, log_text)
    if error:
        where = f" while {error['phase']}" if error.get("phase") else ""
        cause = f"{error['type']}: {error['message']}" if error.get("message") else error["type"]
        return f"Failed{where}: {cause} ({ending})."
    cause = _last_exception(log_text)
    return f"Failed: {cause} ({ending})." if cause else f"Failed: {ending[0].upper()}{ending[1:]}."


def _files_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            with open(path, "rb") as content:
                for block in iter(lambda: content.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@transaction.atomic
def _register_model(run: TrainingRun, out_dir: Path, now) -> ModelVersion:
    result = json.loads((out_dir / "result.json").read_text())
    model_dir = Path(result["model_dir"])
    version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelVersion.Kind.REWARD if run.kind == TrainingRun.Kind.REWARD else ModelVersion.Kind.POLICY,
        name=f"{run.kind}-{run.pk}",
        base_model=run.base_model,
        artefact_path=str(model_dir.relative_to(_artefacts())),
        content_hash=_files_hash(model_dir),
        metrics=result["metrics"],
        parent=run.parent_model,
        snapshot=run.snapshot,
        training_run=run,
        code_version=code_version(),
    )
    promotion = _promotion(version, run)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, progress=1.0, finished_at=now, heartbeat_at=now,
        log_tail=_log_tail(out_dir / "log.txt"),
        metrics={**(run.metrics or {}), **result["metrics"], "phase": "done", "promotion": promotion},
    )  # fmt: skip
    version.refresh_from_db()
    return version


@transaction.atomic
def _register_generations(run: TrainingRun, out_dir: Path, now) -> int:
    """The generated responses, stored with their model version, and one comparison task per prompt that
    mixes them with earlier responses to that prompt (other origins first, newest first), shuffled. Returns
    how many tasks were made. An empty response (the model ended at once) cannot be judged: it is counted,
    not stored."""
    from labeling.models import Prompt, Response
    from labeling.services import comparison_task_create, response_create

    policy, project = run.parent_model, run.project
    written: dict[int, list[str]] = {}
    empty = 0
    with open(out_dir / "responses.jsonl", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                texts = written.setdefault(int(record["prompt_id"]), [])
                if record["response"].strip():
                    texts.append(record["response"])
                else:
                    empty += 1
    prompts = Prompt.objects.in_bulk(list(written), field_name="pk")
    order = random.Random(run.pk)
    tasks = responses = 0
    for prompt_id, texts in written.items():
        prompt = prompts.get(prompt_id)
        if prompt is None or prompt.project_id != project.pk:
            continue  # deleted since the snapshot, or not this project's
        new = [response_create(prompt=prompt, text=text, model_version=policy) for text in texts]
        responses += len(new)
        earlier = list(
            Response.objects.filter(prompt=prompt).exclude(pk__in=[response.pk for response in new])
            .exclude(origin=policy.name).order_by("-created_at", "-id")[: max(project.responses_per_task - len(new), 0)]
        )  # fmt: skip
        chosen = new + earlier
        if len(chosen) < 2:
            continue
        order.shuffle(chosen)
        comparison_task_create(project=project, prompt=prompt, responses=chosen)
        tasks += 1
    result = json.loads((out_dir / "result.json").read_text())
    metrics = {**(run.metrics or {}), **result["metrics"], "responses_stored": responses, "tasks_created": tasks,
               "empty_responses": empty, "phase": "done"}  # fmt: skip
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, progress=1.0, finished_at=now, heartbeat_at=now,
        log_tail=_log_tail(out_dir / "log.txt"), metrics=metrics,
    )  # fmt: skip
    return tasks


def _promotion(version: ModelVersion, run: TrainingRun) -> str:
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


def _after_reward_model(version: ModelVersion) -> TrainingRun | None:
    """With the project's "PPO after a better reward model" on: PPO starts against a reward model that has
    just been made current (from the current policy)."""
    project = version.project
    if not project.ppo_after_better_reward or not version.is_current:
        return None
    try:
        return ppo_run_start(project=project, reward_model=version)
    except ApplicationError:  # a PPO run is already going, or there are no prompts: nothing to start
        return None


def _finish(run: TrainingRun, status: str, *, error: str = "", log: Path | None = None) -> None:
    """End a run that did not succeed: its progress stays where it stopped, below 100%."""
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=status, error=error, finished_at=now, heartbeat_at=now, log_tail=_log_tail(log) if log else "",
        progress=min(run.progress, 0.99),
    )  # fmt: skip


def training_run_execute(run_id: int, *, worker: str | None = None, poll_seconds: float = 1.0) -> str:
    """Run a queued run to its end; returns its final status. Safe to call twice (a redelivered task):
    only a queued run is started."""
    worker = worker or socket.gethostname()
    now = timezone.now()
    started = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED, cancel_requested=False).update(
        status=TrainingRun.Status.RUNNING, worker=worker, started_at=now, heartbeat_at=now
    )
    run = TrainingRun.objects.select_related("project", "snapshot", "parent_model").get(pk=run_id)
    if not started:
        return run.status
    out_dir = _artefacts() / "runs" / f"{run.kind}-{run.pk}"
    out_dir.mkdir(parents=True, exist_ok=True)
    TrainingRun.objects.filter(pk=run.pk).update(output_dir=str(out_dir.relative_to(_artefacts())))
    log_path = out_dir / "log.txt"
    try:
        _prepare_inputs(run, out_dir)
        follower = _MetricsFollower(out_dir / "metrics.jsonl")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                trainer_command(run, out_dir),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so that cancelling stops all of it
                env={**os.environ, **TRAINER_ENVIRONMENT},
            )
            while process.poll() is None:
                time.sleep(poll_seconds)
                _record_progress(run, follower.new_lines(), timezone.now())
                if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
                    _stop(process)
                    _finish(run, TrainingRun.Status.CANCELLED, error="Cancelled by an administrator.", log=log_path)
                    return TrainingRun.Status.CANCELLED
        _record_progress(run, follower.new_lines(), timezone.now())
        if process.returncode == 0 and (out_dir / "result.json").exists():
            if run.kind == TrainingRun.Kind.GENERATE:
                _register_generations(run, out_dir, timezone.now())
            elif run.kind == TrainingRun.Kind.CRITIQUE:
                _register_chains(run, out_dir, timezone.now())
            elif run.kind == TrainingRun.Kind.AI_FEEDBACK:
                _register_ai_labels(run, out_dir, timezone.now())
            else:
                version = _register_model(run, out_dir, timezone.now())
                if version.kind == ModelVersion.Kind.REWARD:
                    _after_reward_model(version)
            return TrainingRun.Status.SUCCEEDED
        _finish(run, TrainingRun.Status.FAILED, error=failure_message(out_dir, process.returncode), log=log_path)
        return TrainingRun.Status.FAILED
    except Exception as error:  # the run must end failed, whatever went wrong around the trainer
        _finish(run, TrainingRun.Status.FAILED, error=f"{type(error).__name__}: {error}", log=log_path)
        raise


# --- Constitutional AI runs ----------------------------------------------------------------------------------


def _constitution_of(constitution):
    from labeling.models import Constitution

    constitution = constitution or Constitution.objects.filter(is_default=True).first()
    if constitution is None:
        raise ApplicationError("Pick a constitution (there is no default one).")
    return constitution


@transaction.atomic
def critique_run_start(
    *,
    project: Project,
    constitution=None,
    policy: ModelVersion | None = None,
    base_model: str = "smollm2-135m-instruct",
    snapshot: DatasetSnapshot | None = None,
    rounds: int = 1,
    max_prompts: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    few_shot: str = "",
    created_by: User | None = None,
) -> TrainingRun:
    """Queue SL-CAI on a ``prompts`` snapshot (a new one unless given): the model (the policy given, else the
    project's current policy, else ``base_model``) answers, then criticises and revises its answer for
    ``rounds`` rounds by principles drawn from the constitution (the default unless given)."""
    constitution = _constitution_of(constitution)
    if not constitution.principles.filter(is_active=True).exclude(critique_request="").exists():
        raise ApplicationError(f"No active principle of '{constitution.name}' has a critique request.")
    policy = _own_model(project, policy, ModelVersion.Kind.POLICY)
    _positive(rounds=rounds, max_new_tokens=max_new_tokens, temperature=temperature)
    if max_prompts is not None and max_prompts < 0:
        raise ApplicationError("Max prompts must be 0 (all) or more.")
    snapshot = _snapshot_of(project, snapshot, "prompts", created_by)
    return _create_run(
        project=project, kind=TrainingRun.Kind.CRITIQUE, snapshot=snapshot, parent_model=policy,
        base_model=policy.name if policy else base_model, created_by=created_by,
        config={"constitution_id": constitution.pk, "rounds": rounds, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "few_shot": few_shot, "max_prompts": max_prompts or 0},
    )  # fmt: skip


def _pair_tasks(project: Project):
    from labeling.models import ComparisonTask

    return ComparisonTask.objects.filter(project=project).annotate(k=Count("responses")).filter(k=2)


@transaction.atomic
def ai_feedback_run_start(
    *,
    project: Project,
    constitution=None,
    principle_ids: list[int] | None = None,
    model: str = "smollm2-135m-instruct",
    chain_of_thought: bool = False,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue AI feedback: the feedback model labels every pair task (K = 2) of the project by each chosen
    principle with a comparison question (all active ones of the constitution by default)."""
    constitution = _constitution_of(constitution)
    principles = constitution.principles.filter(is_active=True).exclude(comparison_question="")
    if principle_ids:
        principles = principles.filter(pk__in=[getattr(principle, "pk", principle) for principle in principle_ids])
    chosen = list(principles.values_list("pk", flat=True))
    if not chosen:
        raise ApplicationError(f"No chosen principle of '{constitution.name}' has a comparison question.")
    if not _pair_tasks(project).exists():
        raise ApplicationError("AI feedback labels pairs: this project has no task with exactly two responses.")
    return _create_run(
        project=project, kind=TrainingRun.Kind.AI_FEEDBACK, base_model=model, created_by=created_by,
        config={"constitution_id": constitution.pk, "principle_ids": chosen, "chain_of_thought": chain_of_thought},
    )  # fmt: skip


def _prepare_inputs(run: TrainingRun, out_dir: Path) -> None:
    """Files a run reads besides its snapshot, written when it starts (so it sees the tasks of that moment)."""
    from labeling import selectors
    from labeling.models import Principle

    config = run.config or {}
    if run.kind == TrainingRun.Kind.CRITIQUE:
        principles = Principle.objects.filter(constitution_id=config["constitution_id"], is_active=True)
        rows = [
            {"id": p.pk, "name": p.name, "critique_request": p.critique_request,
             "revision_request": p.revision_request, "comparison_question": p.comparison_question}
            for p in principles
        ]  # fmt: skip
        (out_dir / "principles.json").write_text(json.dumps(rows))
        (out_dir / "few_shot.txt").write_text(config.get("few_shot", ""), encoding="utf-8")
    elif run.kind == TrainingRun.Kind.AI_FEEDBACK:
        principles = list(Principle.objects.filter(pk__in=config["principle_ids"]))
        task_ids = list(_pair_tasks(run.project).order_by("id").values_list("pk", flat=True))
        with open(out_dir / "comparisons.jsonl", "w", encoding="utf-8") as out:
            for start in range(0, len(task_ids), 500):  # the texts of 500 tasks per query
                for task_id, content in selectors.task_contents(task_ids=task_ids[start : start + 500]).items():
                    (first_id, first), (second_id, second) = content.texts.items()
                    for principle in principles:
                        out.write(json.dumps({
                            "task_id": task_id, "principle_id": principle.pk, "prompt": content.messages,
                            "question": principle.comparison_question, "first_id": first_id,
                            "second_id": second_id, "first": first, "second": second,
                        }) + "\n")  # fmt: skip


def _finish_succeeded(run: TrainingRun, out_dir: Path, now, extra: dict) -> None:
    result = json.loads((out_dir / "result.json").read_text())
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, progress=1.0, finished_at=now, heartbeat_at=now,
        log_tail=_log_tail(out_dir / "log.txt"),
        metrics={**(run.metrics or {}), **result["metrics"], **extra, "phase": "done"},
    )  # fmt: skip


@transaction.atomic
def _register_chains(run: TrainingRun, out_dir: Path, now) -> int:
    """Every chain the run wrote, with its rounds; chains on prompts that are gone are left out."""
    from labeling.models import Constitution, CritiqueChain, CritiqueRound, Principle, Prompt

    constitution = Constitution.objects.get(pk=run.config["constitution_id"])
    principles = Principle.objects.in_bulk()
    stored = 0
    with open(out_dir / "chains.jsonl", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    prompts = Prompt.objects.in_bulk([record["prompt_id"] for record in records])
    for record in records:
        prompt = prompts.get(record["prompt_id"])
        if prompt is None or prompt.project_id != run.project_id or not record["rounds"]:
            continue
        chain = CritiqueChain.objects.create(
            project=run.project, prompt=prompt, constitution=constitution, training_run=run,
            model_name=run.base_model, initial_response=record["initial_response"],
            final_revision=record["rounds"][-1]["revision"],
        )  # fmt: skip
        CritiqueRound.objects.bulk_create(
            CritiqueRound(chain=chain, number=round_["number"], principle=principles[round_["principle_id"]],
                          critique=round_["critique"], revision=round_["revision"])
            for round_ in record["rounds"]
        )  # fmt: skip
        stored += 1
    _finish_succeeded(run, out_dir, now, {"chains_stored": stored})
    return stored


@transaction.atomic
def _register_ai_labels(run: TrainingRun, out_dir: Path, now) -> int:
    """Each label as a judgement with source ``ai``: the preferred response first, the probability that it is
    the better one (0.5 or more), the principle, and the feedback model as origin."""
    from labeling.models import ComparisonTask, Judgement, Principle
    from labeling.services import judgement_create

    with open(out_dir / "labels.jsonl", encoding="utf-8") as lines:
        labels = [json.loads(line) for line in lines if line.strip()]
    tasks = ComparisonTask.objects.in_bulk([label["task_id"] for label in labels])
    principles = Principle.objects.in_bulk([label["principle_id"] for label in labels])
    origin = f"{run.base_model}"[-200:]
    stored = 0
    for label in labels:
        task = tasks.get(label["task_id"])
        if task is None or sorted(task.response_ids()) != sorted([label["first_id"], label["second_id"]]):
            continue  # the task is gone or changed since the run started
        client_id = f"run{run.pk}-t{task.pk}-p{label['principle_id']}"
        if Judgement.objects.filter(origin=origin, client_submission_id=client_id).exists():
            continue  # stored by an earlier attempt of this run
        p = float(label["probability_first"])
        preferred, other = (
            (label["first_id"], label["second_id"]) if p >= 0.5 else (label["second_id"], label["first_id"])
        )
        judgement_create(
            task=task, ranking=[[preferred], [other]], client_submission_id=client_id, source="ai", origin=origin,
            probability=max(p, 1.0 - p), principle=principles[label["principle_id"]],
        )  # fmt: skip
        stored += 1
    _finish_succeeded(run, out_dir, now, {"labels_stored": stored})
    return stored
