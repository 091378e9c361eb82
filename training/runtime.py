"""What a trainer shares with whoever runs it: the metrics lines it writes, the phases it goes through and
how far along it is, and the error it leaves when it fails. The app's workers read the same lines.

Every line is a JSON object with ``time`` (Unix seconds). Three kinds:

- ``{"event": "phase", "phase": "loading", "progress": 0.0}``: a phase starts. Phases: loading, measuring, training,
  evaluating, normalising, saving, checking, generating, labelling.
- ``{"event": "progress", "phase": "training", "phase_progress": 0.43, "progress": 0.41, "eta_s": 120}``:
  how far along the phase and the whole run are, at most every ``interval`` seconds. ``eta_s`` (time left in
  the training phase) only while training.
- anything else (a logging step, an evaluation, ``{"event": "done", ...}``): a point of the run's curves,
  with ``phase`` and ``progress`` added.

``progress`` is the whole run's: each phase has a weight, and phases that are not weighted (evaluating
between epochs) leave it where it is. It reaches 1.0 only with the ``done`` line.
"""

import json
import math
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

MetricsSink = Callable[[dict], None]

# What a trainer leaves in its output folder (``--out``), by name, for whoever launched it to read back.
RESULT_FILE = "result.json"  # the run's outcome: metrics and where its outputs are
METRICS_FILE = "metrics.jsonl"  # the lines described above (``--metrics`` names it; the app uses this name)
ERROR_FILE = "error.json"  # the trainer's account of its failure (``error-rank<N>.json`` for other processes)
STOP_FILE = "stop"  # written by whoever gave up on the run: the trainer stops (its text says why)
MODEL_DIR = "model"  # a trained model, saved for ``from_pretrained``
TENSORBOARD_DIR = "tensorboard"  # the run's TensorBoard event files (training.tracking)
RESPONSES_FILE = "responses.jsonl"  # generate: one sampled response per line
CHAINS_FILE = "chains.jsonl"  # critique: one critique-and-revision chain per line
LABELS_FILE = "labels.jsonl"  # AI feedback: one preference label per line
PROBES_FILE = "probes.jsonl"  # ppo: the probe prompts' answers at each probe point, with score and KL
SCORES_FILE = "scores.jsonl"  # score: {"response_id", "score"} per response
HELD_OUT_JUDGEMENTS = "held_out_judgements.jsonl"  # reward: the model's verdict on each held-out judgement

# How much of a run each phase is, by trainer (the rest of each run is setting up, weighted 0).
PHASE_WEIGHTS = {
    "reward": {"loading": 0.05, "training": 0.85, "normalising": 0.05, "saving": 0.05},
    "sft": {"loading": 0.05, "training": 0.9, "saving": 0.05},
    "dpo": {"loading": 0.05, "measuring": 0.05, "training": 0.8, "saving": 0.05, "checking": 0.05},
    "ppo": {"loading": 0.05, "training": 0.9, "saving": 0.05},
    "generate": {"loading": 0.05, "generating": 0.95},
    "evaluate": {"generating": 1.0},
    "score": {"loading": 0.1, "scoring": 0.9},
    "critique": {"loading": 0.05, "generating": 0.95},
    "feedback": {"loading": 0.05, "labelling": 0.95},
}


def json_safe(value):
    """``value`` with every NaN or infinity replaced by None: JSON has no such numbers, and PostgreSQL refuses
    the ``NaN`` that Python's json writes (a correlation over too few replies, an accuracy over no pairs)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


class Progress:
    """A trainer's voice: ``phase`` when one starts, ``update`` as it goes, ``log`` for curve points, ``done``
    at the end. Each line goes to ``sink`` (the metrics file, a progress bar, a test's list).

    A phase may be entered again (training resumes after the evaluation that ends each epoch): it goes on from
    where it was, and its time left counts only the time spent in it."""

    def __init__(self, sink: MetricsSink | None, kind: str, *, interval: float = 1.0, clock=time.time) -> None:
        self.sink = sink or (lambda line: None)
        self.weights = PHASE_WEIGHTS[kind]
        self.interval, self.clock = interval, clock
        self.phase_name = ""
        self.fractions: dict[str, float] = {}  # how far along each phase is
        self.spent: dict[str, float] = {}  # seconds spent in each phase, up to its last exit
        self.entered = clock()
        self.overall = 0.0
        self.last_update = float("-inf")

    @property
    def phase_fraction(self) -> float:
        return self.fractions.get(self.phase_name, 0.0)

    def _emit(self, line: dict) -> None:
        self.sink(json_safe({"time": round(self.clock(), 3), **line}))

    def _set_overall(self) -> None:
        """Weighted phases move the whole run's progress, never backwards; others (evaluating between
        epochs) leave it where it is."""
        if self.phase_name not in self.weights:
            return
        names = list(self.weights)
        before = sum(self.weights[name] for name in names[: names.index(self.phase_name)])
        reached = before + self.weights[self.phase_name] * self.phase_fraction
        self.overall = round(min(0.99, max(self.overall, reached)), 4)

    def phase(self, name: str) -> None:
        now = self.clock()
        if self.phase_name:
            self.spent[self.phase_name] = self.spent.get(self.phase_name, 0.0) + now - self.entered
        self.phase_name, self.entered = name, now
        self.last_update = float("-inf")
        self._set_overall()
        self._emit({"event": "phase", "phase": name, "phase_progress": round(self.phase_fraction, 4),
                    "progress": self.overall})  # fmt: skip

    def update(self, fraction: float, *, force: bool = False, **extra) -> None:
        """How far along the current phase is (0..1); written at most every ``interval`` seconds."""
        self.fractions[self.phase_name] = min(max(fraction, 0.0), 1.0)
        self._set_overall()
        now = self.clock()
        if not force and now - self.last_update < self.interval:
            return
        self.last_update = now
        line = {"event": "progress", "phase": self.phase_name, "phase_progress": round(self.phase_fraction, 4),
                "progress": self.overall, **extra}  # fmt: skip
        eta = self.eta()
        if eta is not None:
            line["eta_s"] = eta
        self._emit(line)

    def eta(self) -> float | None:
        """Seconds left in the training phase, from its pace so far; None outside it."""
        if self.phase_name != "training" or self.phase_fraction <= 0:
            return None
        elapsed = self.spent.get("training", 0.0) + self.clock() - self.entered
        return round(elapsed / self.phase_fraction * (1 - self.phase_fraction), 1)

    def log(self, line: dict) -> None:
        """A point of the run's curves (a logging step, an evaluation)."""
        extra = {"phase": self.phase_name, "progress": self.overall}
        eta = self.eta()
        if eta is not None:
            extra["eta_s"] = eta
        self._emit({**line, **extra})

    def done(self, summary: dict) -> None:
        self._emit({"event": "done", **summary, "phase": "done", "progress": 1.0})


# --- the output folder ---------------------------------------------------------------------------------------


def write_result(output_dir: str | Path, result: dict) -> Path:
    """The run's outcome, written last: its presence tells the launcher the run finished."""
    path = Path(output_dir) / RESULT_FILE
    path.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
    return path


def read_result(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / RESULT_FILE).read_text())


# --- errors --------------------------------------------------------------------------------------------------


def process_rank() -> int:
    """This process's rank among those ``accelerate launch`` started (0 when it is the only one)."""
    return int(os.environ.get("RANK", "0") or 0)


def write_error(output_dir: str | Path | None, error: BaseException, phase: str = "") -> dict:
    """Leave the trainer's own account of its failure (exception type and message, the phase it was in, the
    time) where the worker looks for it, one file per process, and return it."""
    record = {"type": type(error).__name__, "message": str(error).strip(), "phase": phase, "time": time.time()}
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        rank = process_rank()
        name = ERROR_FILE if rank == 0 else ERROR_FILE.replace(".json", f"-rank{rank}.json")
        (folder / name).write_text(json.dumps(record), encoding="utf-8")
    return record


def read_error(output_dir: str | Path) -> dict | None:
    """The first failure any process recorded (a failing process often takes the others down with errors of
    their own, later)."""
    records = []
    for path in Path(output_dir).glob(ERROR_FILE.replace(".json", "*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return min(records, key=lambda record: record.get("time", 0.0)) if records else None


# --- dying with the worker ---------------------------------------------------------------------------------

# The processes a trainer lives for, comma-separated: the worker that started it sets this, and the trainer
# stops when any of them is gone (``accelerate launch`` in between passes the environment on).
WATCHED_PIDS_ENV = "RLHF_STUDIO_WATCH_PIDS"
STOPPED_EXIT_CODE = 3


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class Watchdog(threading.Thread):
    """Stops the trainer (``on_stop(reason)``, by default: record the error and exit at once) when a process
    it lives for has gone (the worker was killed) or when ``STOP_FILE`` appears in its output folder (the run
    was marked failed elsewhere). A daemon thread that looks every ``interval`` seconds."""

    def __init__(
        self, output_dir: str | Path | None, pids: list[int], *, interval: float = 1.0,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name="trainer-watchdog", daemon=True)
        self.stop_file = Path(output_dir) / STOP_FILE if output_dir is not None else None
        self.pids, self.interval = pids, interval
        self.on_stop = on_stop or self._exit
        self.stopped = threading.Event()

    @classmethod
    def from_environment(cls, output_dir: str | Path | None, **kwargs) -> "Watchdog":
        pids = [int(pid) for pid in os.environ.get(WATCHED_PIDS_ENV, "").split(",") if pid.strip().isdigit()]
        return cls(output_dir, pids, **kwargs)

    def reason(self) -> str | None:
        gone = [pid for pid in self.pids if not process_alive(pid)]
        if gone:
            return f"The worker that started this trainer is gone (process {gone[0]}): the trainer stopped with it."
        if self.stop_file is not None and self.stop_file.exists():
            text = self.stop_file.read_text(encoding="utf-8").strip()
            return text or "The run was stopped: it is no longer running in the database."
        return None

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            reason = self.reason()
            if reason:
                self.on_stop(reason)
                return

    def _exit(self, reason: str) -> None:
        if self.stop_file is not None:
            write_error(self.stop_file.parent, RuntimeError(reason), "stopped")
        os._exit(STOPPED_EXIT_CODE)


def random_states() -> dict:
    """Every random generator's state (torch, CUDA, Python, NumPy), for a checkpoint."""
    import numpy as np
    import torch

    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def random_states_restore(states: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
