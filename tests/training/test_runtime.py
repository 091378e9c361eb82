"""What a trainer tells whoever runs it: phases with progress, the whole run's progress (never 100% before the
end), time left only while training, and its own account of a failure (with a clean exit code)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training import cli
from training.runtime import STOP_FILE, STOPPED_EXIT_CODE, Progress, Watchdog, read_error, write_error

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_moves_through_weighted_phases_and_reaches_one_only_when_done():
    lines, clock = [], Clock()
    progress = Progress(lines.append, "reward", interval=0, clock=clock)
    progress.phase("loading")
    progress.update(1.0)
    assert lines[-1]["progress"] == pytest.approx(0.05)
    progress.phase("training")
    clock.now += 10
    progress.update(0.5)
    assert lines[-1] == {
        "time": 1010.0, "event": "progress", "phase": "training", "phase_progress": 0.5,
        "progress": pytest.approx(0.05 + 0.85 / 2), "eta_s": 10.0,
    }  # fmt: skip
    progress.phase("evaluating")  # between epochs: the run's progress holds, and there is no time left to show
    clock.now += 100
    progress.update(0.9)
    assert lines[-1]["progress"] == pytest.approx(0.475) and "eta_s" not in lines[-1]
    progress.phase("training")  # the second epoch goes on from half-way; the evaluation's time does not count
    assert lines[-1]["progress"] == pytest.approx(0.475) and lines[-1]["phase_progress"] == 0.5
    clock.now += 5
    progress.update(0.75)
    assert lines[-1]["eta_s"] == 5.0  # 15 s for three quarters: 5 s for the last quarter
    progress.update(1.0)
    assert [line["progress"] for line in lines] == sorted(line["progress"] for line in lines)  # never backwards
    progress.phase("normalising")
    progress.update(1.0)
    progress.phase("saving")
    progress.update(1.0)
    assert max(line["progress"] for line in lines) <= 0.99
    progress.done({"steps": 3})
    assert lines[-1] == {"time": 1115.0, "event": "done", "steps": 3, "phase": "done", "progress": 1.0}


def test_progress_lines_are_written_at_most_once_an_interval_but_logs_always():
    lines, clock = [], Clock()
    progress = Progress(lines.append, "sft", interval=2.0, clock=clock)
    progress.phase("training")
    for step in range(1, 11):
        clock.now += 0.5
        progress.update(step / 10)
    updates = [line for line in lines if line.get("event") == "progress"]
    assert [line["phase_progress"] for line in updates] == [0.1, 0.5, 0.9]
    progress.log({"step": 10, "loss": 1.5})
    assert lines[-1]["loss"] == 1.5 and lines[-1]["phase"] == "training" and "eta_s" in lines[-1]


def test_a_data_error_is_a_one_line_message_exit_code_2_and_an_error_file(tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\nnot json\n')
    out, metrics = tmp_path / "out", tmp_path / "metrics" / "m.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "training", "reward", "--data", str(data), "--out", str(out), "--metrics", str(metrics)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: broken.jsonl, line 2: not JSON (Expecting value)."
    assert "Traceback" not in done.stderr
    error = read_error(out)
    assert (error["type"], error["message"], error["phase"]) == (
        "DataError", "broken.jsonl, line 2: not JSON (Expecting value).", "loading",
    )  # fmt: skip
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert lines[0]["event"] == "phase" and lines[-1] == {"event": "error", **error}


def test_an_unexpected_error_keeps_its_traceback_exits_1_and_is_recorded(tmp_path, monkeypatch, capsys):
    def crash(args, metrics):
        metrics({"event": "phase", "phase": "training"})
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(cli.RUNNERS, "sft", crash)
    code = cli.main(["sft", "--data", "x.jsonl", "--out", str(tmp_path / "out")])
    assert code == 1
    assert "Traceback" in capsys.readouterr().err
    error = read_error(tmp_path / "out")
    assert (error["type"], error["message"], error["phase"]) == (
        "RuntimeError", "CUDA error: an illegal memory access was encountered", "training",
    )  # fmt: skip


def test_with_several_processes_only_the_first_writes_metrics_and_the_first_failure_is_the_one_told(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("RANK", "1")
    with cli.Metrics(tmp_path / "metrics.jsonl") as metrics:
        metrics({"event": "phase", "phase": "training"})
    assert not (tmp_path / "metrics.jsonl").exists()
    first = write_error(tmp_path, RuntimeError("NCCL timeout on rank 1"), "training")  # error-rank1.json
    monkeypatch.setenv("RANK", "0")
    write_error(tmp_path, RuntimeError("rank 0 lost its peer"), "training")  # later, error.json
    assert read_error(tmp_path) == first


def test_the_watchdog_stops_the_trainer_when_a_process_it_lives_for_is_gone(tmp_path):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reasons: list[str] = []
    watchdog = Watchdog(tmp_path, [os.getpid(), worker.pid], interval=0.05, on_stop=reasons.append)
    watchdog.start()
    time.sleep(0.3)
    assert reasons == [] and watchdog.is_alive()
    worker.kill()
    worker.wait()
    watchdog.join(5)
    assert reasons == [
        f"The worker that started this trainer is gone (process {worker.pid}): the trainer stopped with it."
    ]


def test_the_watchdog_stops_the_trainer_when_its_run_is_stopped_and_by_default_exits_with_its_error(tmp_path):
    reasons: list[str] = []
    watchdog = Watchdog(tmp_path, [], interval=0.05, on_stop=reasons.append)
    watchdog.start()
    (tmp_path / STOP_FILE).write_text("The run was marked failed.")
    watchdog.join(5)
    assert reasons == ["The run was marked failed."]

    # A real trainer process: it exits with the stop code and leaves its reason for the app.
    code = (
        "import time; from training.runtime import Watchdog; "
        f"Watchdog({str(tmp_path / 'run')!r}, [], interval=0.05).start(); time.sleep(30)"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STOP_FILE).write_text("The run was marked failed.")
    ended = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30)
    assert ended.returncode == STOPPED_EXIT_CODE
    assert read_error(tmp_path / "run")["message"] == "The run was marked failed."


def test_numbers_json_cannot_hold_leave_the_trainer_as_null(tmp_path):
    """PostgreSQL's json refuses NaN: a metric over too few replies (a correlation of two) is written as null."""
    from training.runtime import Progress, json_safe, read_result, write_result

    lines: list[dict] = []
    Progress(lines.append, "reward").done({"length_correlation": float("nan"), "nested": [{"x": float("inf")}]})
    assert lines[-1]["length_correlation"] is None and lines[-1]["nested"] == [{"x": None}]
    write_result(tmp_path, {"metrics": {"prefers_longer": float("nan"), "accuracy": 0.5}})
    assert read_result(tmp_path) == {"metrics": {"prefers_longer": None, "accuracy": 0.5}}
    assert json_safe((1.0, "a", None)) == [1.0, "a", None]
