"""Running a queued run: the trainer in a subprocess (``accelerate launch -m training <command> ...``), so that a
crash or an out-of-memory kill cannot take the worker down and GPU memory is freed when it ends; its JSON metrics
lines folded into the run as they come; Cancel honoured; and at the end the kind's registration of what it made,
or the run marked failed with the trainer's own reason. Everything that differs between kinds comes from their
``RunSpec``."""

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from labeling import artefacts
from labeling.errors import ApplicationError
from labeling.models import TrainingRun, WebhookEvent
from labeling.runs.logs import failure_message
from labeling.runs.outcomes import run_end, run_event_emit
from labeling.runs.spec import spec_for
from labeling.runs.starting import model_path
from training.config import RolloutConfig
from training.runtime import METRICS_FILE, MODEL_DIR, RESULT_FILE, WATCHED_PIDS_ENV

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
DATABASE_DOWN = (OperationalError, InterfaceError)
DATABASE_PATIENCE_S = 60.0  # how long the end of a run waits for a restarting database
# The trainer's log is read by people on the run page: no download and loading bars, unbuffered output.
TRAINER_ENVIRONMENT = {
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def config_options(config: dict, names: tuple[str, ...]) -> list[str]:
    """``--name value`` for each of ``names`` the run's config holds; ``--name`` or ``--no-name`` for a flag."""
    options = []
    for name in names:
        if name not in config:
            continue
        flag, value = name.replace("_", "-"), config[name]
        if isinstance(value, bool):
            options.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            options += [f"--{flag}", str(value)]
    return options


def launch_command() -> list[str]:
    """``accelerate launch`` with its options: ``ACCELERATE_CONFIG_FILE``'s, or one process with every CPU
    thread the worker may use (accelerate's own default on a machine without a GPU is one thread, half of a
    two-core machine or a sixteenth of a sixteen-core one; ``OMP_NUM_THREADS`` set for the worker wins)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if settings.ACCELERATE_CONFIG_FILE:
        return [*launch, "--config_file", settings.ACCELERATE_CONFIG_FILE]
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    return [
        *launch, "--num_processes", "1", "--num_machines", "1", "--num_cpu_threads_per_process", threads,
        "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip


def trainer_command(run: TrainingRun, out_dir: Path) -> list[str]:
    """``accelerate launch -m training <command> ...``: one process on a CPU or a GPU by default, or whatever
    ``ACCELERATE_CONFIG_FILE`` describes (several GPUs, DeepSpeed, several nodes). The kind's spec names the
    command, how the snapshot and the starting model are passed, which config keys become options, and any
    other arguments."""
    spec = spec_for(run.kind)
    launch = launch_command()
    config = run.config or {}
    command = [spec.command]
    if spec.data_flag:
        if run.snapshot is None:
            raise ApplicationError(f"The {run.get_kind_display()} run {run.pk} names no snapshot to read.")
        command += [spec.data_flag, artefacts.snapshot_reference(run.snapshot)]
    command += ["--out", str(out_dir), "--metrics", str(out_dir / METRICS_FILE),
                "--cache-dir", str(settings.MODEL_CACHE_DIR)]  # fmt: skip
    if spec.model_flag:  # a kind that loads several models names them in its own arguments
        command += [spec.model_flag, model_path(run.parent_model) if run.parent_model else run.base_model]
    command += [*spec.arguments(run, out_dir), *config_options(config, spec.options)]
    if spec.config is not None and issubclass(spec.config, RolloutConfig):
        command += rollout_options(config)
    return [*launch, "-m", "training", *command]


def rollout_options(config: dict) -> list[str]:
    """This worker's rollout engine settings (``ROLLOUT_*``) where they differ from the trainer's defaults and
    the run's own config does not set them."""
    worker = {
        "rollout_engine": settings.ROLLOUT_ENGINE, "static_cache": settings.ROLLOUT_STATIC_CACHE,
        "cuda_graph": settings.ROLLOUT_CUDA_GRAPH, "vllm_gpu_memory": settings.ROLLOUT_VLLM_GPU_MEMORY,
    }  # fmt: skip
    chosen = {name: value for name, value in worker.items() if value != getattr(RolloutConfig, name)}
    return config_options({**chosen, **config}, tuple(chosen))


class MetricsFollower:
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


def record_progress(run: TrainingRun, lines: list[dict], now) -> None:
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


def seconds_left(run: TrainingRun, now=None) -> float | None:
    """Time left in the training phase: the trainer's last estimate, less the time since it was made."""
    metrics = run.metrics or {}
    eta, made_at = metrics.get("eta_s"), metrics.get("eta_at")
    if run.status != "running" or metrics.get("phase") != "training" or not isinstance(eta, int | float):
        return None
    waited = (now or timezone.now()).timestamp() - made_at if isinstance(made_at, int | float) else 0.0
    return max(0.0, eta - max(waited, 0.0))


def _watched_pids() -> str:
    """The processes the trainer lives for: this one, and the Celery worker's main process when this is a
    child of its pool (a worker killed with SIGKILL takes no child with it)."""
    from billiard.process import current_process

    pids = [os.getpid()]
    if current_process().name != "MainProcess":
        pids.append(os.getppid())
    return ",".join(str(pid) for pid in pids)


def _stop(process: subprocess.Popen) -> None:
    """End the trainer and everything it started (accelerate spawns the training process)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


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
    run_event_emit(run, WebhookEvent.RUN_STARTED)
    run.output_dir = artefacts.run_key(run)
    TrainingRun.objects.filter(pk=run.pk).update(output_dir=run.output_dir)
    out_dir = artefacts.run_folder(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "log.txt"
    spec = spec_for(run.kind)
    process: subprocess.Popen | None = None
    try:
        spec.prepare(run, out_dir)
        follower = MetricsFollower(out_dir / METRICS_FILE)
        unsaved: list[dict] = []  # metrics lines read while the database did not answer
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                trainer_command(run, out_dir),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so that cancelling stops all of it
                env={**os.environ, **TRAINER_ENVIRONMENT, WATCHED_PIDS_ENV: _watched_pids()},
            )
            while process.poll() is None:
                time.sleep(poll_seconds)
                unsaved += follower.new_lines()
                try:
                    record_progress(run, unsaved, timezone.now())
                    cancelled = TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
                except DATABASE_DOWN as error:
                    # A restart or a blip: the trainer goes on, and so does its heartbeat once the database is
                    # back. Should it stay away past the heartbeat timeout, the beat job fails the run and the
                    # trainer's watchdog stops it.
                    logger.warning("run %s: the database did not answer (%s); the trainer goes on", run.pk, error)
                    connection.close()
                    continue
                unsaved = []
                if cancelled:
                    _stop(process)
                    outputs_keep(run, out_dir, succeeded=False)
                    run_end(run, TrainingRun.Status.CANCELLED, error="Cancelled by an administrator.", log=log_path)
                    return TrainingRun.Status.CANCELLED
        unsaved += follower.new_lines()
        _when_the_database_answers(lambda: record_progress(run, unsaved, timezone.now()))
        if process.returncode == 0 and (out_dir / RESULT_FILE).exists():
            outputs_keep(run, out_dir, succeeded=True)  # raises, and nothing is registered, unless all arrived
            _when_the_database_answers(lambda: spec.register(run, out_dir, timezone.now()))
            outputs_done(out_dir)
            return TrainingRun.Status.SUCCEEDED
        outputs_keep(run, out_dir, succeeded=False)
        failure = failure_message(out_dir, process.returncode)
        _when_the_database_answers(lambda: run_end(run, TrainingRun.Status.FAILED, error=failure, log=log_path))
        return TrainingRun.Status.FAILED
    except Exception as error:  # the run must end failed, whatever went wrong around the trainer
        if process is not None and process.poll() is None:
            _stop(process)  # nobody would watch it any more
        reason = f"{type(error).__name__}: {error}"
        _when_the_database_answers(lambda: run_end(run, TrainingRun.Status.FAILED, error=reason, log=log_path))
        raise


def outputs_keep(run: TrainingRun, out_dir: Path, *, succeeded: bool) -> None:
    """Put the run's folder into the artefact store, each file checked on arrival: the model folder as a tree of
    its own (the model version's files), then the rest (log, metrics, generated files) with the run's manifest.
    A run that did not succeed keeps its log and metrics there for people to read, if they can be stored."""
    store = artefacts.store()
    key = run.output_dir
    if not succeeded:
        try:
            store.put_tree(out_dir, key, skip=(MODEL_DIR,))
        except Exception as error:  # the run's failure is what matters; the log tail is in the database
            logger.warning("run %s: its log could not be stored (%s)", run.pk, error)
        return
    try:
        if (out_dir / MODEL_DIR).is_dir():
            store.put_tree(out_dir / MODEL_DIR, f"{key}/{MODEL_DIR}")
        store.put_tree(out_dir, key, skip=(MODEL_DIR,))
    except Exception as error:
        raise ApplicationError(f"The run's outputs could not be stored in the artefact store: {error}") from error


def outputs_done(out_dir: Path) -> None:
    """A remote store holds the run's files now: free the worker's disk."""
    if not artefacts.store().is_local:
        shutil.rmtree(out_dir, ignore_errors=True)


def _when_the_database_answers(write, patience_s: float = DATABASE_PATIENCE_S) -> None:
    """Make a write that ends a run, retrying while the database restarts (up to ``patience_s``)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            write()
            return
        except DATABASE_DOWN:
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
