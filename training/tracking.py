"""Where a run's curves go besides ``metrics.jsonl``: TensorBoard event files in ``OUT/tensorboard`` on every
run, and a run in MLflow or Weights & Biases when the environment names one. accelerate's trackers do the writing.

- MLflow: ``MLFLOW_TRACKING_URI`` set (a server, ``sqlite:///...``, a folder). The experiment is
  ``MLFLOW_EXPERIMENT_NAME`` (default ``rlhf-studio``); the run is named after the product's run (``reward-12``),
  holds the run's settings as parameters and ends FINISHED or FAILED. Needs the ``mlflow`` extra.
- Weights & Biases: ``WANDB_PROJECT`` set (with ``WANDB_API_KEY``, or ``WANDB_MODE=offline``). Needs ``wandb``.

Every numeric value of a metrics line is a scalar at the line's ``step`` (the last step seen for lines without
one: evaluations, the ``done`` line); progress lines are not curves. A tracker that cannot start or write is
reported once on stderr and left out: the training run goes on, its metrics.jsonl is the record."""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from training.runtime import TENSORBOARD_DIR

MLFLOW_EXPERIMENT = "rlhf-studio"
NOT_CURVES = frozenset({"time", "progress", "phase_progress", "eta_s", "step", "total_steps"})


def scalars(line: Mapping) -> dict[str, float]:
    """The line's numbers that make curves (booleans and progress left out)."""
    return {
        key: value
        for key, value in line.items()
        if key not in NOT_CURVES and isinstance(value, int | float) and not isinstance(value, bool)
    }


def settings_of(values: Mapping) -> dict[str, str | int | float | bool]:
    """A run's settings as tracker parameters: plain values as they are, anything else as text, unset ones out."""
    return {
        key: value if isinstance(value, str | int | float | bool) else str(value)
        for key, value in values.items()
        if value is not None
    }


def trackers_for(out: Path, run_name: str, environ: Mapping[str, str] = os.environ) -> list:
    """The trackers this run writes to: TensorBoard always, MLflow and W&B when configured."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    trackers = [TensorBoardTracker(run_name="", logging_dir=str(out / TENSORBOARD_DIR))]
    if environ.get("MLFLOW_TRACKING_URI"):
        trackers.append(MLflowTracker(experiment_name=MLFLOW_EXPERIMENT, run_name=run_name))
    if environ.get("WANDB_PROJECT"):
        trackers.append(WandBTracker(run_name=environ["WANDB_PROJECT"], name=run_name))
    for tracker in trackers:
        tracker.main_process_only = False  # only the first process makes trackers (training.cli.Metrics)
    return trackers


class Tracking:
    """Started with the run's settings, fed every metrics line, finished with the run's outcome."""

    def __init__(self, trackers: list) -> None:
        self.trackers = trackers
        self.step = 0

    def _each(self, action: str, call) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as error:  # noqa: BLE001 (a tracker never stops training; see the module docstring)
                print(f"warning: {tracker.name} tracking stopped ({action}): {error}", file=sys.stderr)
                self.trackers.remove(tracker)

    def start(self, settings: Mapping) -> None:
        values = settings_of(settings)

        def start(tracker) -> None:
            tracker.start()
            if tracker.name != "tensorboard":  # TensorBoard's hparams view needs final metrics: the run page has them
                tracker.store_init_configuration(values)

        self._each("start", start)

    def log(self, line: Mapping) -> None:
        if line.get("event") in ("phase", "progress", "error"):
            return
        if isinstance(line.get("step"), int) and not isinstance(line.get("step"), bool):
            self.step = line["step"]
        values = scalars(line)
        if values:
            self._each("log", lambda tracker: tracker.log(values, step=self.step))

    def finish(self, *, failed: bool) -> None:
        def finish(tracker) -> None:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="FAILED" if failed else "FINISHED")
            elif tracker.name == "wandb":
                tracker.run.finish(exit_code=1 if failed else 0)
            else:
                tracker.finish()

        self._each("finish", finish)
