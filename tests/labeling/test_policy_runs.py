"""The policy side of the loop from Django: SFT, PPO and response generation as runs on a real Celery worker
(`accelerate launch` subprocesses with tiny models), and the rules around them."""

import json
import uuid
from collections import Counter

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import runs, services
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, ModelVersion, Response, TaskResponse, TrainingRun
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory
from tests.worker import celery_worker, wait_for_end
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_reward_model, tiny_tokenizer

WORDS = ["question", "good", "bad", "fine", "answer"] + [str(index) for index in range(20)]


def project_with_prompts(prompts: int = 6, **fields):
    """Prompts with one earlier human response each, and a demonstration each."""
    project = ProjectFactory(responses_per_task=3, overlap=1, **fields)
    for index in range(prompts):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"question {index}"}])
        ResponseFactory(prompt=prompt, text=f"fine answer {index}")
        services.demonstration_create(prompt=prompt, text=f"good answer {index}", origin="tests")
    return project


def tiny_policy_folder(folder) -> str:
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tiny_causal_lm(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def reward_version(project, artefacts_dir, name: str = "reward-tiny", accuracy: float = 0.7) -> ModelVersion:
    """A tiny reward model registered as the project's current reward model."""
    folder = artefacts_dir / "models" / name
    tokenizer = tiny_tokenizer(WORDS)
    tiny_reward_model(tokenizer, seed=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelVersion.objects.create(
        project=project, kind="reward", name=name, artefact_path=f"models/{name}", is_current=True,
        metrics={"eval_accuracy": accuracy},
    )  # fmt: skip


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_sft_then_ppo_then_generation_run_on_a_worker_and_feed_the_next_round(
    admin_client,
    settings,
    artefacts,
    tmp_path,
):
    project = project_with_prompts()
    base = tiny_policy_folder(tmp_path / "policy")
    reward = reward_version(project, artefacts)
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        sft = wait_for_end(runs.sft_run_start(project=project, base_model=base, epochs=3, learning_rate=1e-3), worker)
        assert sft.status == "succeeded", f"{sft.error}\n{sft.log_tail}"
        sft_version = ModelVersion.objects.get(training_run=sft)
        assert (sft_version.kind, sft_version.base_model, sft.snapshot.kind) == ("policy", base, "sft")
        assert any("loss" in line for line in sft.history)

        # PPO from the admin, starting from the SFT policy against the current reward model.
        form = {
            "policy": sft_version.pk, "base_model": "unused", "reward_model": "", "snapshot": "", "kl_coef": "0.1",
            "steps": "3", "batch_size": "4", "ppo_epochs": "4", "max_new_tokens": "6", "learning_rate": "0.001",
        }  # fmt: skip
        response = admin_client.post(reverse("admin:labeling_project_run_ppo", args=[project.pk]), form)
        assert response.status_code == 302, response.content.decode()[-3000:]
        ppo = wait_for_end(TrainingRun.objects.get(project=project, kind="ppo"), worker)
        assert ppo.status == "succeeded", f"{ppo.error}\n{ppo.log_tail}"
        policy = ModelVersion.objects.get(training_run=ppo)
        assert (policy.kind, policy.parent, ppo.reward_model, ppo.snapshot.kind) == (
            "policy", sft_version, reward, "prompts",
        )  # fmt: skip
        steps = [line for line in ppo.history if "kl" in line and "step" in line]
        assert [line["step"] for line in steps] == [1, 2, 3] and steps[0]["kl"] == 0.0
        assert ppo.metrics["value_model_from"] == "reward model"
        page = admin_client.get(reverse("admin:labeling_trainingrun_change", args=[ppo.pk])).content.decode()
        assert page.count('<figure class="chart"') >= 2  # score and KL over the steps

        runs.model_version_make_current(version=policy)
        tasks_before = ComparisonTask.objects.filter(project=project).count()
        generate = wait_for_end(runs.generate_run_start(project=project, samples=2, max_new_tokens=5), worker)
    assert generate.status == "succeeded", f"{generate.error}\n{generate.log_tail}"
    new_tasks = ComparisonTask.objects.filter(project=project).order_by("id")[tasks_before:]
    assert len(new_tasks) == 6 == generate.metrics["tasks_created"]
    stored = Response.objects.filter(model_version=policy)
    assert stored.count() == generate.metrics["responses_stored"] == 12 - generate.metrics["empty_responses"]
    for task in new_tasks:
        origins = Counter(response.origin for response in task.responses.all())
        new = stored.filter(prompt=task.prompt).count()
        # the new responses (two, less any empty one) beside earlier ones, up to the project's K = 3
        assert origins == {policy.name: new, "human": 1} and new >= 1
    orders = {
        tuple(TaskResponse.objects.filter(task=task).order_by("position").values_list("response__origin", flat=True))
        for task in new_tasks
    }
    assert len(orders) > 1  # shuffled: the new responses do not always come first


@pytest.mark.django_db
def test_runs_refuse_what_they_cannot_use(settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = project_with_prompts(prompts=2)
    with pytest.raises(ApplicationError, match="PPO needs a reward model"):
        runs.ppo_run_start(project=project)
    with pytest.raises(ApplicationError, match="Generating needs a policy"):
        runs.generate_run_start(project=project)
    other = reward_version(ProjectFactory(), artefacts, name="elsewhere")
    with pytest.raises(ApplicationError, match="Pick a reward model of this project"):
        runs.ppo_run_start(project=project, reward_model=other)
    reward_version(project, artefacts)
    with pytest.raises(ApplicationError, match="Beta|Kl coef must be positive"):
        runs.ppo_run_start(project=project, kl_coef=0)
    empty = ProjectFactory()
    with pytest.raises(ApplicationError, match="sft snapshot is empty"):
        runs.sft_run_start(project=empty)
    assert not TrainingRun.objects.exists()


def finish_run(project, artefacts_dir, kind: str, metrics: dict, baseline: ModelVersion | None = None):
    """A run of ``kind`` whose trainer has just written its model and result: registered as the worker does."""
    run = TrainingRun.objects.create(
        project=project, kind=kind, status="running", config={"baseline_model_id": baseline.pk if baseline else None}
    )
    out_dir = artefacts_dir / "runs" / f"{kind}-{run.pk}"
    (out_dir / "model").mkdir(parents=True)
    (out_dir / "model" / "config.json").write_text("{}")
    (out_dir / "result.json").write_text(json.dumps({"model_dir": str(out_dir / "model"), "metrics": metrics}))
    version = runs.model_version_register(run, out_dir, timezone.now())
    run.refresh_from_db()
    return version, run


@pytest.mark.django_db
def test_a_first_model_becomes_current_and_a_better_reward_model_replaces_it_on_the_same_held_out_prompts(
    settings, artefacts
):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = project_with_prompts(prompts=2)
    first, run = finish_run(project, artefacts, "reward", {"eval_accuracy": 0.7, "eval_pairs": 40})
    assert first.is_current and run.metrics["promotion"] == "Made current: the project had no current reward model."
    assert run.progress == 1.0 and run.status == "succeeded"

    worse, run = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.65, "baseline_eval_accuracy": 0.7, "eval_pairs": 40}, first
    )
    assert not worse.is_current
    assert run.metrics["promotion"] == f"{first.name} stays current: 0.650 against 0.700 on the same 40 held-out pairs."

    better, run = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.8, "baseline_eval_accuracy": 0.7, "eval_pairs": 40}, first
    )
    first.refresh_from_db()
    assert better.is_current and not first.is_current
    assert (
        run.metrics["promotion"]
        == f"Made current in place of {first.name}: 0.800 against 0.700 on the same 40 held-out pairs."
    )

    # Measured against a model that is no longer current: no fair comparison, nothing changes.
    stale, run = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.9, "baseline_eval_accuracy": 0.7, "eval_pairs": 40}, first
    )
    assert not stale.is_current and "did not measure it on the same held-out prompts" in run.metrics["promotion"]

    project.promote_better_reward_model = False
    project.save()
    best, run = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.95, "baseline_eval_accuracy": 0.8, "eval_pairs": 40}, better
    )
    assert not best.is_current and "does not promote" in run.metrics["promotion"]

    policy, _ = finish_run(project, artefacts, "sft", {"train_loss": 1.0})
    second_policy, run = finish_run(project, artefacts, "ppo", {"last_score": 0.1})
    assert policy.is_current and not second_policy.is_current
    assert "make this one current" in run.metrics["promotion"]


@pytest.mark.django_db
def test_ppo_starts_against_a_reward_model_made_current_when_the_project_asks(settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = project_with_prompts(prompts=2, ppo_after_better_reward=True)
    current = reward_version(project, artefacts, name="reward-tiny", accuracy=0.70)
    worse, _ = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.6, "baseline_eval_accuracy": 0.7, "eval_pairs": 9}, current
    )
    assert runs.after_reward_model(worse) is None
    better, _ = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.8, "baseline_eval_accuracy": 0.7, "eval_pairs": 9}, current
    )
    run = runs.after_reward_model(better)
    assert run is not None and (run.kind, run.reward_model, run.status) == ("ppo", better, "queued")

    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    project.ppo_after_better_reward = False
    project.save()
    best, _ = finish_run(
        project, artefacts, "reward", {"eval_accuracy": 0.9, "baseline_eval_accuracy": 0.8, "eval_pairs": 9}, better
    )
    assert best.is_current and runs.after_reward_model(best) is None


@pytest.mark.django_db
def test_the_admin_run_pages_show_their_forms_and_the_services_refusals(admin_client, settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = project_with_prompts(prompts=2)
    for page, field in [("run_sft", "epochs"), ("run_ppo", "kl_coef"), ("generate", "samples")]:
        response = admin_client.get(reverse(f"admin:labeling_project_{page}", args=[project.pk]))
        assert response.status_code == 200 and f'name="{field}"' in response.content.decode()
    url = reverse("admin:labeling_project_generate", args=[project.pk])
    form = {"policy": "", "snapshot": "", "samples": "2", "max_new_tokens": "16", "temperature": "0.7"}
    page = admin_client.post(url, form).content.decode()
    assert "Generating needs a policy" in page
    response = admin_client.post(
        reverse("admin:labeling_project_run_sft", args=[project.pk]),
        {
            "snapshot": "",
            "parent": "",
            "base_model": "some/model",
            "epochs": "1",
            "learning_rate": "0.0001",
            "batch_size": "8",
        },
    )
    run = TrainingRun.objects.get(project=project, kind="sft")
    assert response.status_code == 302 and response["Location"].endswith(f"/trainingrun/{run.pk}/change/")
    assert (run.base_model, run.snapshot.kind, run.snapshot.row_count) == ("some/model", "sft", 2)


@pytest.mark.django_db
def test_a_rater_can_not_reach_the_run_pages(client, rater):
    project = project_with_prompts(prompts=1)
    client.force_login(rater)
    response = client.get(reverse("admin:labeling_project_run_ppo", args=[project.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_dpo_from_the_admin_tunes_the_current_policy_on_the_preference_pairs_and_registers_a_policy(
    admin_client, settings, artefacts, tmp_path
):
    project = project_with_prompts()
    for index, prompt in enumerate(project.prompts.order_by("id")):
        responses = [ResponseFactory(prompt=prompt, text=f"good answer {index}")]
        responses.append(Response.objects.get(prompt=prompt, text=f"fine answer {index}"))
        task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
        ranking = [[responses[0].pk], [responses[1].pk]]  # "good" beats "fine"
        services.judgement_create(task=task, ranking=ranking, origin="tests", client_submission_id=f"d{index}")
    tiny_policy_folder(artefacts / "models" / "sft-start")
    start = ModelVersion.objects.create(
        project=project, kind="policy", name="sft-start", artefact_path="models/sft-start", is_current=True
    )
    form = {"snapshot": "", "parent": "", "base_model": "unused", "epochs": "20", "learning_rate": "0.003",
            "batch_size": "6", "beta": "0.1", "loss_type": "sigmoid"}  # fmt: skip
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        response = admin_client.post(reverse("admin:labeling_project_run_dpo", args=[project.pk]), form)
        assert response.status_code == 302, response.content.decode()[-3000:]
        run = wait_for_end(TrainingRun.objects.get(project=project, kind="dpo"), worker)
    assert run.status == "succeeded", f"{run.error}\n{run.log_tail}"
    version = ModelVersion.objects.get(training_run=run)
    assert (version.kind, version.parent, version.snapshot.kind, run.snapshot.row_count) == (
        "policy", start, "preference", 6
    )  # fmt: skip
    assert version.metrics["margin_after"] > version.metrics["margin_before"] + 1  # learnt "good" over "fine"
    assert any("margin" in line for line in run.history)
    # A policy version like any other: an evaluation run takes it beside the policy it started from, so that
    # both meet on the leaderboard.
    project.prompts.update(is_eval=True)
    evaluation = runs.evaluation_run_start(project=project, policies=[start, version], max_prompts=2)
    assert set(evaluation.config["policies"]) == {start.pk, version.pk}
