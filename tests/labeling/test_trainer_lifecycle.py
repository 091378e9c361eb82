"""A trainer never outlives the run it works for: it dies with the worker that started it (even one killed
with SIGKILL), and stops when its run is marked failed elsewhere; a beat job every minute marks the runs of a
dead worker failed, whichever worker is alive."""

import contextlib
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from labeling import runs
from labeling.models import ModelVersion, TrainingRun
from labeling.tasks import training_runs_fail_stale_task
from tests.factories import ProjectFactory
from tests.labeling.test_training_runs import ranked_project, tiny_base_model
from tests.worker import celery_worker


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def long_reward_run(settings, artefacts, worker, project, base: str) -> tuple[TrainingRun, str]:
    """A reward run on ``worker`` long enough to be caught training; the run and its output folder."""
    settings.CELERY_TRAINING_QUEUE = worker.queue
    run = runs.reward_run_start(project=project, base_model=base, epochs=500, learning_rate=1e-3)
    assert wait_until(lambda: TrainingRun.objects.get(pk=run.pk).history, 120), worker.log()
    run.refresh_from_db()
    return run, str(artefacts / run.output_dir)


@pytest.fixture
def no_trainer_left(artefacts):
    """Should a test fail with trainers still running, they are stopped rather than left to the machine."""
    yield
    for pid in processes_mentioning(str(artefacts / "runs")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_trainer_dies_with_a_killed_worker_and_the_beat_job_fails_its_run(
    settings, artefacts, tmp_path, no_trainer_left
):
    project = ranked_project(judgements=60)
    base = tiny_base_model(tmp_path / "tiny")
    with celery_worker(tmp_path) as worker:
        run, out_dir = long_reward_run(settings, artefacts, worker, project, base)
        trainers = processes_mentioning(out_dir)
        assert len(trainers) >= 2, trainers  # accelerate's launcher and the training process
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        assert wait_until(lambda: not processes_mentioning(out_dir), 20), processes_mentioning(out_dir)

    # The run still reads "running" until its heartbeat is stale; then the beat job marks it failed.
    assert TrainingRun.objects.get(pk=run.pk).status == "running"
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert training_runs_fail_stale_task() == 1
    run.refresh_from_db()
    assert run.status == "failed" and "worker running this stopped" in run.error
    assert runs.reward_run_start(project=project, base_model=base, epochs=1).status == "queued"  # room for one


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_trainer_whose_run_was_marked_failed_elsewhere_stops(settings, artefacts, tmp_path, no_trainer_left):
    project = ranked_project(judgements=60)
    base = tiny_base_model(tmp_path / "tiny")
    with celery_worker(tmp_path) as worker:
        run, out_dir = long_reward_run(settings, artefacts, worker, project, base)
        # Another worker's beat job decides the run is orphaned (say its heartbeats stopped reaching the
        # database): it marks the run failed and leaves a stop file, and the trainer stops within seconds.
        TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        assert runs.training_runs_fail_orphaned() == 1
        assert wait_until(lambda: not processes_mentioning(out_dir), 20), processes_mentioning(out_dir)
        assert wait_until(lambda: TrainingRun.objects.get(pk=run.pk).log_tail, 20)  # the worker saw it end
        assert worker.process.poll() is None  # and lives on
    run.refresh_from_db()
    assert run.status == "failed" and "worker running this stopped" in run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()


@pytest.mark.django_db
def test_the_stale_run_check_is_scheduled_every_minute_in_beat():
    schedule = PeriodicTask.objects.get(task="labeling.tasks.training_runs_fail_stale_task")
    assert schedule.enabled and schedule.interval.every == 60 and schedule.interval.period == "seconds"


@pytest.mark.django_db
def test_the_beat_job_fails_only_stale_running_runs_and_leaves_a_stop_file(artefacts):
    project, other = ProjectFactory(), ProjectFactory()
    now = timezone.now()
    (artefacts / "runs" / "reward-x").mkdir(parents=True)
    stale = TrainingRun.objects.create(
        project=project, kind="reward", status="running", heartbeat_at=now - timedelta(hours=1),
        output_dir="runs/reward-x",
    )  # fmt: skip
    fresh = TrainingRun.objects.create(project=other, kind="reward", status="running", heartbeat_at=now)
    queued = TrainingRun.objects.create(project=other, kind="sft", status="queued", heartbeat_at=None)
    assert training_runs_fail_stale_task() == 1
    assert {run.pk: run.status for run in TrainingRun.objects.all()} == {
        stale.pk: "failed", fresh.pk: "running", queued.pk: "queued"
    }  # fmt: skip
    assert "worker running this stopped" in (artefacts / "runs" / "reward-x" / "stop").read_text()


@pytest.mark.trainer
@pytest.mark.django_db(transaction=True)
def test_a_database_that_restarts_mid_run_loses_the_run_nothing(settings, artefacts, tmp_path, monkeypatch, caplog):
    """While PostgreSQL restarts, the worker's heartbeat writes fail: the trainer goes on, the metrics read
    meanwhile are kept for the next write, and the run ends as it would have."""
    from django.db import OperationalError

    from labeling.runs import execution

    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{tmp_path.name}"
    project = ranked_project(judgements=60)
    run = runs.reward_run_start(project=project, base_model=tiny_base_model(tmp_path / "tiny"), epochs=2)
    real_record = execution.record_progress
    calls = {"n": 0}

    def flaky(run, lines, now):
        calls["n"] += 1
        if 2 <= calls["n"] <= 4:
            raise OperationalError("terminating connection due to administrator command")
        return real_record(run, lines, now)

    monkeypatch.setattr(execution, "record_progress", flaky)
    assert runs.training_run_execute(run.pk, poll_seconds=0.3) == "succeeded"
    assert calls["n"] > 4 and "the database did not answer" in caplog.text
    run.refresh_from_db()
    written = [json.loads(line) for line in (artefacts / run.output_dir / "metrics.jsonl").read_text().splitlines()]
    points = [line for line in written if line.get("event") not in ("phase", "progress", "error")]
    assert run.history == points and any("eval_accuracy" in point for point in points)  # no line went missing
    assert ModelVersion.objects.filter(training_run=run).exists()
