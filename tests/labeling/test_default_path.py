"""The product's own default path, end to end, as a new user meets it after `make run`: the demo project, a real
Celery worker running each trainer as a subprocess, the same service calls the admin's run pages make, and
the default models (all-MiniLM-L6-v2 as the reward model, SmolLM2-135M-Instruct as the policy, both from
their packages). Only the amount of work is cut (epochs, batch sizes, steps, response budget) to fit CI on a
CPU. Then a rater judges the new mixed tasks through the API."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.http import HttpRequest
from rest_framework.test import APIClient

from labeling import runs
from labeling.models import ComparisonTask, Judgement, ModelVersion, Project, Response, User
from tests.worker import celery_worker, wait_for_end

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT = 900  # seconds per run: the first SFT run also converts SmolLM2 from its GGUF file


def succeeded(run):
    assert run.status == "succeeded", f"{run.get_kind_display()} run failed: {run.error}\n{run.log_tail}"
    assert run.progress == 1.0 and run.metrics["phase"] == "done"
    return run


def judge_new_tasks(credentials: dict, new_task_ids: set[int]) -> list[int]:
    """Rater 1 works through the project, skipping the demo's older tasks, and ranks each new task."""
    client = APIClient()
    assert client.login(request=HttpRequest(), username="rater1", password=credentials["rater1"])
    judged = []
    for attempt in range(1000):
        response = client.post("/api/v1/projects/oasst-demo/tasks/next")
        if response.status_code == 204 or not new_task_ids - set(judged):
            break
        task = response.json()
        if task["task_id"] not in new_task_ids:
            assert (
                client.post(
                    f"/api/v1/tasks/{task['task_id']}/skip", {"reason": "not this one"}, format="json"
                ).status_code
                == 200
            )
            continue
        ids = [item["id"] for item in task["responses"]]
        body = {"client_submission_id": f"default-path-{attempt}", "ranking": [[i] for i in ids]}
        assert client.post(f"/api/v1/tasks/{task['task_id']}/judgements", body, format="json").status_code == 201
        judged.append(task["task_id"])
    return judged


def test_the_demo_project_goes_round_the_loop_with_the_default_models(settings, artefacts, tmp_path):
    credentials_path = tmp_path / "credentials.json"
    call_command("demo_setup", credentials=credentials_path, stdout=StringIO())
    credentials = json.loads(credentials_path.read_text())
    project = Project.objects.get(slug="oasst-demo")
    admin = User.objects.get(username="admin")
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue

        # "Train a reward model" on its default backbone (minilm-l6), a tenth of an epoch.
        reward = succeeded(
            wait_for_end(runs.reward_run_start(project=project, epochs=0.1, created_by=admin), worker, RUN_TIMEOUT)
        )
        reward_model = ModelVersion.objects.get(training_run=reward)
        assert reward_model.is_current and reward_model.base_model == "minilm-l6"
        assert 0.0 <= reward_model.metrics["eval_accuracy"] <= 1.0

        # "Run SFT" on its default base model, the packaged SmolLM2: fine-tuned (one step) and saved.
        start = runs.sft_run_start(project=project, epochs=0.01, batch_size=2, created_by=admin)
        sft = succeeded(wait_for_end(start, worker, RUN_TIMEOUT))
        sft_policy = ModelVersion.objects.get(training_run=sft)
        assert sft_policy.is_current and sft.base_model == "smollm2-135m-instruct"
        saved_config = json.loads((artefacts / sft_policy.artefact_path / "config.json").read_text())
        assert "quantization_config" not in saved_config

        # "Run PPO" with its default choices: the current policy against the current reward model.
        ppo = succeeded(
            wait_for_end(
                runs.ppo_run_start(
                    project=project, steps=2, batch_size=2, ppo_epochs=1, max_new_tokens=8, created_by=admin
                ),
                worker,
                RUN_TIMEOUT,
            )
        )
        ppo_policy = ModelVersion.objects.get(training_run=ppo)
        assert (ppo_policy.parent, ppo.reward_model) == (sft_policy, reward_model)
        assert [line["step"] for line in ppo.history if "kl" in line] == [1, 2]
        runs.model_version_make_current(version=ppo_policy)

        # "Generate responses": the new policy answers a few prompts; each gets a task beside earlier answers.
        tasks_before = set(ComparisonTask.objects.filter(project=project).values_list("pk", flat=True))
        generate = succeeded(
            wait_for_end(
                runs.generate_run_start(project=project, samples=2, max_prompts=3, max_new_tokens=16, created_by=admin),
                worker,
                RUN_TIMEOUT,
            )
        )
    new_tasks = ComparisonTask.objects.filter(project=project).exclude(pk__in=tasks_before)
    assert generate.metrics["tasks_created"] == new_tasks.count() == 3
    assert Response.objects.filter(model_version=ppo_policy).count() == generate.metrics["responses_stored"]

    new_ids = set(new_tasks.values_list("pk", flat=True))
    assert sorted(judge_new_tasks(credentials, new_ids)) == sorted(new_ids)
    stored = Judgement.objects.filter(task_id__in=new_ids, rater__username="rater1", source="human")
    assert stored.count() == 3
    for judgement in stored:
        assert sorted(r for group in judgement.ranking for r in group) == sorted(judgement.task.response_ids())
