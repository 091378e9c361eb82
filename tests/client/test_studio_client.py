"""The Python client and the ``studio`` command against a live server and a real Celery worker: pagination
followed, an import waited for, an export and a snapshot, a reward run started and followed to its registered
model, model versions listed and made current, and errors as one line naming the field."""

import json
import os
import subprocess
import sys

import pytest
from rest_framework.authtoken.models import Token
from studio_client import Client, StudioError

from labeling.models import ModelVersion, TrainingRun
from tests.factories import ProjectFactory, UserFactory
from tests.worker import celery_worker
from training.models import tiny_reward_model, tiny_tokenizer

WORDS = ["good", "bad", "fine", "poor", "okay", "meh", "question"]


def rankings_file(path, count: int = 60):
    """K = 4 rankings with a known answer: "good" beats "fine" beats "poor" beats "bad"."""
    rows = [
        {"prompt": f"question {i}", "responses": [f"bad bad {i}", f"good good {i}", f"poor meh {i}", f"fine okay {i}"],
         "ranking": [[1], [3], [2], [0]]}
        for i in range(count)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def studio(live_server, token: str, *args: str) -> subprocess.CompletedProcess:
    """The installed ``studio`` command, as a user runs it."""
    env = {**os.environ, "STUDIO_URL": live_server.url, "STUDIO_TOKEN": token}
    command = [os.path.join(os.path.dirname(sys.executable), "studio"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_client_and_the_studio_command_run_the_loop_against_a_live_server(
    live_server, settings, artefacts, tmp_path
):
    staff = UserFactory(username="ml-engineer", is_staff=True)
    token = Token.objects.create(user=staff).key
    project = ProjectFactory(slug="helpful", responses_per_task=4, overlap=1)
    for _ in range(52):
        ProjectFactory()
    base = tmp_path / "tiny-reward"
    tokenizer = tiny_tokenizer(WORDS + [str(index) for index in range(100)])
    tiny_reward_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    client = Client(live_server.url, token)
    assert len(client.projects()) == 53  # two pages of 50, followed

    with celery_worker(tmp_path) as worker:
        settings.CELERY_TASK_DEFAULT_QUEUE = worker.queue
        settings.CELERY_TRAINING_QUEUE = worker.queue
        imported = studio(live_server, token, "import", "helpful", str(rankings_file(tmp_path / "rankings.jsonl")))
        assert imported.returncode == 0, imported.stderr
        assert "imported 60 records" in imported.stdout

        exported = studio(live_server, token, "export", "helpful", "preference", "-o", str(tmp_path / "pairs.jsonl"))
        assert exported.returncode == 0, exported.stderr
        pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
        assert len(pairs) == 360 and pairs[0]["chosen"].startswith("good")  # C(4, 2) pairs per ranking

        snapshot = client.snapshot("helpful", "ranking")
        assert snapshot["row_count"] == 60

        started = studio(
            live_server, token, "run", "helpful", "reward", "--set", f"base_model={base}", "--set", "epochs=4",
            "--set", "learning_rate=0.003", "--set", f"snapshot={snapshot['id']}", "--follow",
        )  # fmt: skip
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}\n{worker.log()[-3000:]}"
        run = TrainingRun.objects.get(project=project, kind="reward")
        version = ModelVersion.objects.get(training_run=run)
        assert f"run {run.pk} succeeded, model version {version.pk}" in started.stdout
        assert f"run {run.pk} reward: 100% succeeded" in started.stderr  # its progress, a line per step when logged
        assert version.metrics["eval_accuracy"] >= 0.9 and run.snapshot_id == snapshot["id"]

    followed = client.run(run.pk, history=True)
    assert followed["status"] == "succeeded" and any("loss" in point for point in followed["history"])
    listed = studio(live_server, token, "models", "helpful")
    assert listed.returncode == 0 and f"reward-{run.pk}" in listed.stdout
    assert client.make_current(version.pk)["is_current"] is True
    board = studio(live_server, token, "leaderboard", "helpful")
    assert board.returncode == 0, board.stderr

    wrong = studio(live_server, token, "run", "helpful", "sft", "--set", "epochs=-1")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: The run's config is not valid. (epochs:")
    missing = studio(live_server, token, "models", "no-such-project")
    assert missing.returncode == 1 and "There is no project 'no-such-project'" in missing.stderr
    with pytest.raises(StudioError) as refused:
        Client(live_server.url, "not-a-token").projects()
    assert refused.value.status == 401
