"""Reward runs from Django: started from the admin, run by a real Celery worker as an `accelerate launch`
subprocess, followed live, registered as a model version on success and marked failed otherwise; one run
of a kind per project at a time; retraining on a schedule."""

import json
import os
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from labeling import runs, services
from labeling.errors import ApplicationError, Conflict
from labeling.models import ModelVersion, RewardCheck, TrainingRun
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory
from tests.worker import celery_worker, wait_for_end
from training.data import read_rankings
from training.models import tiny_reward_model, tiny_tokenizer

WORDS = ["good", "bad", "fine", "poor", "okay", "meh", "question"]


def add_ranking(project, index: int) -> None:
    """One task with a known answer: "good" beats "fine" beats "poor" beats "bad"."""
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"question {index}"}])
    texts = [f"good good {index}", f"fine okay {index}", f"poor meh {index}", f"bad bad {index}"]
    responses = [ResponseFactory(prompt=prompt, text=text) for text in reversed(texts)]
    task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
    best_first = [[response.pk] for response in reversed(responses)]
    services.judgement_create(task=task, ranking=best_first, origin="tests", client_submission_id=f"j{index}")


def ranked_project(judgements: int = 60, **fields):
    project = ProjectFactory(overlap=1, **fields)
    for index in range(judgements):
        add_ranking(project, index)
    return project


def tiny_base_model(folder) -> str:
    tokenizer = tiny_tokenizer(WORDS + [str(index) for index in range(100)])
    tiny_reward_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_started_from_the_admin_trains_on_a_worker_and_registers_a_model(
    admin_client, settings, artefacts, tmp_path
):
    project = ranked_project()
    base = tiny_base_model(tmp_path / "tiny")
    dead = TrainingRun.objects.create(
        project=ProjectFactory(), kind="reward", status="running", worker="celery@gone", heartbeat_at=None
    )
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        url = reverse("admin:labeling_project_train_reward", args=[project.pk])
        form = {"snapshot": "", "base_model": base, "epochs": "4", "learning_rate": "0.003"}
        response = admin_client.post(url, form)
        assert response.status_code == 302, response.content.decode()[-2000:]
        run = wait_for_end(TrainingRun.objects.get(project=project), worker)

    assert run.status == "succeeded", f"{run.error}\n{run.log_tail}"
    version = ModelVersion.objects.get(training_run=run)
    assert (version.kind, version.snapshot, version.base_model) == ("reward", run.snapshot, base)
    assert version.metrics["eval_accuracy"] >= 0.9
    assert (artefacts / version.artefact_path / "config.json").exists() and len(version.content_hash) == 64
    assert run.progress == 1.0 and run.finished_at >= run.started_at
    assert any("loss" in line for line in run.history) and any("eval_accuracy" in line for line in run.history)
    assert run.snapshot.kind == "ranking" and run.snapshot.row_count == 60
    # The run's verdict on each judgement it held out, kept with the version for the rater audit.
    checks = RewardCheck.objects.filter(model_version=version)
    assert checks.count() == version.metrics["eval_prompts"] > 0
    agreed, pairs = (sum(checks.values_list(name, flat=True)) for name in ("agreed", "pairs"))
    assert pairs == version.metrics["eval_pairs"] and agreed / pairs == pytest.approx(version.metrics["eval_accuracy"])
    dead.refresh_from_db()
    assert dead.status == "failed" and "stopped" in dead.error  # found when the worker started
    page = admin_client.get(reverse("admin:labeling_trainingrun_change", args=[run.pk])).content.decode()
    assert '<figure class="chart" data-chart="run-' in page and "held-out accuracy by epoch" in page
    # The trainer's TensorBoard files, stored with the run: the same loss curve as the run's history.
    logdir = artefacts / run.output_dir / "tensorboard"
    assert f"tensorboard --logdir {logdir}" in page
    events = EventAccumulator(str(logdir))
    events.Reload()
    losses = [(line["step"], line["loss"]) for line in run.history if "loss" in line and "step" in line]
    assert [(event.step, pytest.approx(event.value, rel=1e-6)) for event in events.Scalars("loss")] == losses


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_trainer_fails_is_marked_failed_with_its_error_and_no_model(settings, artefacts, tmp_path):
    project = ranked_project(judgements=6)
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        run = runs.reward_run_start(project=project, base_model=str(tmp_path / "no-such-model"))
        run = wait_for_end(run, worker)
    assert run.status == "failed"
    # The trainer's own exception and its real exit code (accelerate's launcher exits with 1 whatever it was).
    assert run.error.startswith("Failed while loading: OSError: ") and "no-such-model" in run.error
    assert run.error.endswith("(the trainer exited with code 2).")
    assert "CalledProcessError" not in run.error and "\x1b[" not in run.log_tail
    assert run.progress < 1.0 and run.metrics["phase"] == "loading"
    assert not ModelVersion.objects.exists()
    assert run.snapshot.row_count == 6  # the data is untouched


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_run_stops_its_trainer(settings, artefacts, tmp_path):
    project = ranked_project(judgements=60)
    base = tiny_base_model(tmp_path / "tiny")
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        run = runs.reward_run_start(project=project, base_model=base, epochs=500, learning_rate=1e-3)
        deadline = time.monotonic() + 120
        while not run.history and time.monotonic() < deadline:  # wait until the trainer reports steps
            time.sleep(0.5)
            run.refresh_from_db()
        assert run.status == "running", worker.log()
        runs.training_run_cancel(run=run)
        run = wait_for_end(run, worker, timeout=60)
    assert run.status == "cancelled" and run.error == "Cancelled by an administrator."
    assert 0 < run.progress < 1
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_only_one_reward_run_per_project_at_a_time_even_when_started_together(settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ranked_project(judgements=3)
    barrier, outcomes = threading.Barrier(2), []

    def start():
        barrier.wait()
        try:
            runs.reward_run_start(project=project)
            outcomes.append("started")
        except Conflict:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "started"]
    assert TrainingRun.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_the_schedule_starts_exactly_one_run_after_n_new_judgements_and_none_while_one_runs(settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ranked_project(judgements=2, retrain_after_judgements=3)
    assert runs.reward_retrain_check(project=project) is None  # 2 of 3
    add_ranking(project, 2)
    run = runs.reward_retrain_check(project=project)
    assert run is not None and run.status == "queued"
    assert runs.reward_retrain_check(project=project) is None  # one is queued
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    assert runs.reward_retrain_check(project=project) is None  # nothing new since that run


@pytest.mark.django_db
def test_the_retraining_schedule_is_in_beat_and_follows_the_project_settings(admin_client):
    project = ProjectFactory()
    url = reverse("admin:labeling_project_change", args=[project.pk])
    form = {
        "name": project.name, "slug": project.slug, "guidelines": "", "compare_enabled": "on", "rank_enabled": "on",
        "responses_per_task": 4, "overlap": 1, "gold_rate": 0, "lease_timeout": "00:10:00",
        "retrain_after_judgements": 50, "gold_first_tasks": 5, "gold_min_count": 10, "gold_min_score": 0.6,
        "audit_rules": "{}", "task_order": "fifo", "drift_window": 50, "drift_margin": 0.1,
    }  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    schedule = PeriodicTask.objects.get(name=f"Retrain the reward model of {project.slug}")
    assert (schedule.task, schedule.enabled, schedule.args) == (
        "labeling.tasks.reward_retrain_check_task",
        True,
        f"[{project.pk}]",
    )
    admin_client.post(url, {**form, "retrain_after_judgements": 0, "retrain_on_drift": "on"})
    schedule.refresh_from_db()
    assert schedule.enabled is True  # retraining on drift reads the same schedule
    admin_client.post(url, {**form, "retrain_after_judgements": 0})
    schedule.refresh_from_db()
    assert schedule.enabled is False


@pytest.mark.django_db
def test_cancelling_a_queued_run_ends_it_and_a_running_one_is_asked_to_stop():
    project = ProjectFactory()
    queued = TrainingRun.objects.create(project=project, kind="reward")
    assert runs.training_run_cancel(run=queued).status == "cancelled"
    running = TrainingRun.objects.create(project=project, kind="reward", status="running", heartbeat_at=timezone.now())
    running = runs.training_run_cancel(run=running)
    assert (running.status, running.cancel_requested) == ("running", True)


@pytest.mark.django_db
def test_only_stale_runs_or_the_restarted_workers_own_are_marked_failed():
    project, other = ProjectFactory(), ProjectFactory()
    now = timezone.now()
    alive = TrainingRun.objects.create(
        project=project, kind="reward", status="running", worker="celery@a", heartbeat_at=now
    )
    stale = TrainingRun.objects.create(
        project=other, kind="reward", status="running", worker="celery@b", heartbeat_at=now - timedelta(hours=1)
    )
    mine = TrainingRun.objects.create(project=other, kind="sft", status="running", worker="celery@c", heartbeat_at=now)
    assert runs.training_runs_fail_orphaned(worker="celery@c", now=now) == 2
    statuses = {run.pk: run.status for run in TrainingRun.objects.all()}
    assert statuses == {alive.pk: "running", stale.pk: "failed", mine.pk: "failed"}


@pytest.mark.django_db
def test_making_a_model_current_replaces_the_previous_one():
    project = ProjectFactory()
    first = ModelVersion.objects.create(project=project, kind="reward", name="rm-1", is_current=True)
    second = ModelVersion.objects.create(project=project, kind="reward", name="rm-2")
    runs.model_version_make_current(version=second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.is_current, second.is_current) == (False, True)


LAUNCHER_TRACEBACK = """\
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/accelerate/commands/launch.py", line 999, in simple_launcher
    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
subprocess.CalledProcessError: Command '['python', '-m', 'training', 'sft']' returned non-zero exit status 1.
"""


def test_a_log_is_stored_without_colour_codes_and_with_each_progress_bar_in_its_last_state(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(
        b"\x1b]8;;https://hf.co\x1b\\\x1b(B\x1b[1mBertModel LOAD REPORT\x1b[0m\x1b]8;;\x1b\\\n"
        b"Loading weights:   0%|    | 0/272\rLoading weights:  50%|##  | 136/272\rLoading weights: 100%|####| 272/272\n"
        b"done\n"
    )
    assert runs.log_tail(log) == "BertModel LOAD REPORT\nLoading weights: 100%|####| 272/272\ndone\n"


def test_a_failure_names_the_trainers_last_exception_and_its_real_ending(tmp_path):
    (tmp_path / "log.txt").write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "ValueError: You cannot perform fine-tuning on purely quantized models.\n" + LAUNCHER_TRACEBACK
    )
    assert runs.failure_message(tmp_path, 1) == (
        "Failed: ValueError: You cannot perform fine-tuning on purely quantized models. "
        "(the trainer exited with code 1)."
    )
    (tmp_path / "error.json").write_text(
        json.dumps({"type": "ValueError", "message": "The model is quantized with gguf", "phase": "saving"})
    )
    assert runs.failure_message(tmp_path, 1) == (
        "Failed while saving: ValueError: The model is quantized with gguf (the trainer exited with code 1)."
    )
    (tmp_path / "error.json").unlink()
    (tmp_path / "log.txt").write_text(
        LAUNCHER_TRACEBACK.replace("returned non-zero exit status 1.", "died with <Signals.SIGKILL: 9>.")
    )
    assert runs.failure_message(tmp_path, 1) == (
        "Failed: The trainer was killed by SIGKILL (the kernel kills a process that runs out of memory this way)."
    )
    # No exception of the trainer's own: its last words before the launcher's, and torchrun's ending.
    (tmp_path / "log.txt").write_text(
        "usage: python -m training sft [-h] --data DATA\npython -m training sft: error: unrecognized arguments: --x\n"
        'Traceback (most recent call last):\n  File "run.py", line 9\n'
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "  exitcode  : 2 (pid: 4242)\n"
    )
    assert runs.failure_message(tmp_path, 1) == (
        "Failed: python -m training sft: error: unrecognized arguments: --x (the trainer exited with code 2)."
    )


@pytest.mark.django_db
def test_progress_follows_the_trainers_phases_and_stays_below_one_until_the_run_succeeds():
    run = TrainingRun.objects.create(project=ProjectFactory(), kind="reward", status="running")
    lines = [
        {"time": 100.0, "event": "phase", "phase": "loading", "progress": 0.0},
        {"time": 110.0, "event": "phase", "phase": "training", "progress": 0.05},
        {"time": 120.0, "event": "progress", "phase": "training", "phase_progress": 0.5, "progress": 0.475,
         "eta_s": 10.0},
        {"time": 121.0, "step": 10, "loss": 0.6, "accuracy": 0.7, "phase": "training", "progress": 0.475,
         "eta_s": 9.0},
        {"time": 130.0, "event": "phase", "phase": "normalising", "progress": 0.9},
        {"time": 140.0, "event": "done", "steps": 20, "eval_accuracy": 0.8, "phase": "done", "progress": 1.0},
    ]  # fmt: skip
    runs.record_progress(run, lines[:4], timezone.now())
    run.refresh_from_db()
    assert (run.progress, run.metrics["phase"], run.metrics["phase_progress"]) == (0.475, "training", 0.5)
    assert (run.metrics["eta_s"], run.metrics["eta_at"]) == (9.0, 121.0)
    assert [line.get("step") for line in run.history] == [10]  # phase and progress lines are not curve points
    runs.record_progress(run, lines[4:], timezone.now())
    run.refresh_from_db()
    assert run.progress == 0.99 and "eta_s" not in run.metrics
    assert [line.get("event") for line in run.history] == [None, "done"]


@pytest.mark.django_db
def test_a_reward_run_started_while_a_model_is_current_evaluates_that_model_too(settings, artefacts, tmp_path):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ranked_project(judgements=3)
    first = runs.reward_run_start(project=project)
    assert "--baseline" not in runs.trainer_command(first, tmp_path)
    TrainingRun.objects.filter(pk=first.pk).update(status="succeeded")
    current = ModelVersion.objects.create(
        project=project, kind="reward", name="rm", artefact_path="models/rm", is_current=True
    )
    second = runs.reward_run_start(project=project)
    command = runs.trainer_command(second, tmp_path)
    assert second.config["baseline_model_id"] == current.pk
    assert command[command.index("--baseline") + 1] == str(artefacts / "models" / "rm")


def test_the_trainer_gets_every_cpu_thread_the_worker_may_use(settings, tmp_path, monkeypatch):
    """accelerate's own default on a machine without a GPU is one thread; the trainer gets them all."""
    settings.ACCELERATE_CONFIG_FILE = ""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    script = tmp_path / "threads.py"
    script.write_text("import os, torch\nprint('threads', os.environ['OMP_NUM_THREADS'], torch.get_num_threads())\n")
    completed = subprocess.run(
        [*runs.launch_command(), str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    available = len(os.sched_getaffinity(0))
    assert f"threads {available} {available}" in completed.stdout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker's own setting wins
    assert runs.launch_command()[runs.launch_command().index("--num_cpu_threads_per_process") + 1] == "1"


@pytest.mark.django_db
def test_a_reward_run_s_own_snapshot_gives_the_trainer_a_conversation_turn_by_turn(settings, artefacts, tmp_path):
    """The CPU recipe keeps a conversation's last turn: the trainer must see turns, not one block of text."""
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ranked_project(judgements=2)
    conversation = [
        {"role": "user", "content": "Where do owls sleep?"},
        {"role": "assistant", "content": "In trees."},
        {"role": "user", "content": "And barn owls?"},
    ]
    prompt = PromptFactory(project=project, messages=conversation)
    responses = [ResponseFactory(prompt=prompt, text=text) for text in ("In barns.", "Nowhere.")]
    task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
    services.judgement_create(task=task, ranking=[[responses[0].pk], [responses[1].pk]], origin="tests",
                              client_submission_id="owls")  # fmt: skip
    run = runs.reward_run_start(project=project)
    examples = read_rankings(artefacts / run.snapshot.path).examples
    assert conversation in [example.prompt for example in examples]
    (owls,) = [example for example in examples if example.prompt == conversation]
    assert owls.responses == ["In barns.", "Nowhere."] and owls.ranking == [[0], [1]]


@pytest.mark.django_db
def test_a_reward_run_takes_its_recipe_from_a_preset_and_the_fields_given_override_it(settings, tmp_path):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = ranked_project(judgements=3)
    gpu = runs.reward_run_start(project=project, preset="gpu", epochs=1.5)
    command = runs.trainer_command(gpu, tmp_path)
    assert gpu.base_model == "smollm2-135m-instruct" and gpu.config["preset"] == "gpu"
    assert command[command.index("--preset") + 1] == "gpu" and command[command.index("--epochs") + 1] == "1.5"
    assert "--learning-rate" not in command  # the preset's
    TrainingRun.objects.filter(pk=gpu.pk).update(status="cancelled")
    default = runs.reward_run_start(project=project)
    assert default.base_model == "minilm-l6" and default.config["preset"] == "cpu"
    with pytest.raises(ApplicationError, match="No reward preset 'tpu'"):
        runs.reward_run_start(project=project, preset="tpu")
