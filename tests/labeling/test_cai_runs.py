"""Constitutional AI from Django: critique-and-revise and AI feedback runs on a real Celery worker with a
tiny model, review of critique chains, AI labels beside human ones (in the export, in the reward loss) and
their agreement with people."""

import io
import json
import uuid
from pathlib import Path

import pytest
import torch
from django.urls import reverse

from labeling import exporters, runs, selectors, services
from labeling.errors import ApplicationError, Conflict
from labeling.models import ComparisonTask, CritiqueChain, Demonstration, Judgement
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory
from tests.worker import celery_worker, wait_for_end
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer

WORDS = ["question", "answer", "good", "bad", "(A)", "(B)", "the", "is"] + [str(index) for index in range(10)]


def pair_project(tasks: int = 3):
    """Tasks with two responses each, every one judged by a person (the first response preferred)."""
    project = ProjectFactory(responses_per_task=2, overlap=1)
    for index in range(tasks):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"question {index}"}])
        better = ResponseFactory(prompt=prompt, text=f"good answer {index}")
        worse = ResponseFactory(prompt=prompt, text=f"bad answer {index}")
        task = services.comparison_task_create(project=project, prompt=prompt, responses=[better, worse])
        services.judgement_create(task=task, ranking=[[better.pk], [worse.pk]], origin="people",
                                  client_submission_id=f"h{index}")  # fmt: skip
    return project


def tiny_model_folder(folder) -> str:
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tiny_causal_lm(tokenizer, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.trainer
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_critique_and_ai_feedback_runs_store_chains_and_soft_labels(admin_client, settings, artefacts, tmp_path):
    project = pair_project()
    model = tiny_model_folder(tmp_path / "model")
    constitution = services.constitution_default_ensure()
    chosen = list(constitution.principles.order_by("position")[:2])
    with celery_worker(tmp_path) as worker:
        settings.CELERY_TRAINING_QUEUE = worker.queue
        critique = wait_for_end(
            runs.critique_run_start(project=project, base_model=model, rounds=2, max_new_tokens=4), worker
        )
        form = {"constitution": "", "principle_ids": [p.pk for p in chosen], "model": model}
        response = admin_client.post(reverse("admin:labeling_project_ai_feedback", args=[project.pk]), form)
        assert response.status_code == 302, response.content.decode()[-3000:]
        feedback = wait_for_end(project.training_runs.get(kind="ai_feedback"), worker)

    assert critique.status == "succeeded", f"{critique.error}\n{critique.log_tail}"
    chains = list(CritiqueChain.objects.filter(project=project))
    assert len(chains) == 3 == critique.metrics["chains_stored"]
    principles = set(constitution.principles.values_list("pk", flat=True))
    for chain in chains:
        rounds = list(chain.rounds.all())
        assert [r.number for r in rounds] == [1, 2] and {r.principle_id for r in rounds} <= principles
        assert chain.final_revision == rounds[-1].revision and chain.model_name == model
    page = admin_client.get(reverse("admin:labeling_critiquechain_change", args=[chains[0].pk])).content.decode()
    assert chains[0].rounds.first().principle.name in page

    assert feedback.status == "succeeded", f"{feedback.error}\n{feedback.log_tail}"
    labels = Judgement.objects.filter(task__project=project, source="ai")
    assert labels.count() == 6 == feedback.metrics["labels_stored"]  # 3 pairs x 2 principles
    for label in labels:
        assert 0.5 <= label.probability <= 1.0 and label.principle in chosen and label.origin == model
        assert label.rater is None and sorted(sum(label.ranking, [])) == sorted(label.task.response_ids())
    assert set(ComparisonTask.objects.filter(project=project).values_list("status", flat=True)) == {"complete"}

    # The labels reach the reward-training export with their source, probability and principle.
    stream = io.BytesIO()
    exporters.write_export("ranking", "jsonl", selectors.ExportFilter(project_id=project.pk), stream)
    rows = [json.loads(line) for line in stream.getvalue().splitlines()]
    ai_rows = [row for row in rows if row["source"] == "ai"]
    assert len(ai_rows) == 6 and {row["principle"] for row in ai_rows} == {p.name for p in chosen}
    assert all(0.5 <= row["probability"] <= 1 for row in ai_rows)
    agreement = selectors.ai_human_agreement(project=project)
    assert agreement["pairs"] == 6 and len(agreement["by_principle"]) == 2


@pytest.mark.django_db
def test_agreement_per_principle_and_overall_on_a_constructed_case():
    project = pair_project(tasks=4)
    constitution = services.constitution_default_ensure()
    honest, harmless = constitution.principles.get(name="Honest"), constitution.principles.get(name="Harmless")
    tasks = list(ComparisonTask.objects.filter(project=project).order_by("id"))
    # The person preferred the first response everywhere. Honest agrees on 3 of 4; Harmless on 1 of 2.
    plan = [(honest, [True, True, True, False]), (harmless, [True, False])]
    for principle, agrees in plan:
        for task, agree in zip(tasks, agrees, strict=False):
            first, second = task.response_ids()
            ranking = [[first], [second]] if agree else [[second], [first]]
            services.judgement_create(
                task=task, ranking=ranking, source="ai", probability=0.7, origin="fm",
                client_submission_id=f"{principle.pk}-{task.pk}", principle=principle,
            )  # fmt: skip
    tie_task = tasks[3]  # a tie by a second person is left out
    services.judgement_create(task=tie_task, ranking=[tie_task.response_ids()], origin="people",
                              client_submission_id="tie")  # fmt: skip
    agreement = selectors.ai_human_agreement(project=project)
    assert agreement["by_principle"] == [
        {"principle": "Harmless", "pairs": 2, "agreement": 0.5},
        {"principle": "Honest", "pairs": 4, "agreement": 0.75},
    ]
    assert (agreement["pairs"], agreement["agreement"]) == (6, pytest.approx(4 / 6))


@pytest.mark.django_db
def test_a_reviewed_chain_becomes_a_demonstration_that_exports_as_sft_data(rater):
    project = pair_project(tasks=2)
    constitution = services.constitution_default_ensure()
    prompts = list(project.prompts.order_by("id"))
    chains = [
        CritiqueChain.objects.create(project=project, prompt=prompt, constitution=constitution, model_name="m",
                                     initial_response="first try", final_revision=f"revised {prompt.pk}")
        for prompt in prompts
    ]  # fmt: skip
    accepted = services.critique_chain_review(chain=chains[0], reviewer=rater, action="accept")
    edited = services.critique_chain_review(chain=chains[1], reviewer=rater, action="edit", text="My better text.")
    assert (accepted.review_status, accepted.demonstration.text) == ("accepted", f"revised {prompts[0].pk}")
    assert (edited.review_status, edited.demonstration.text, edited.reviewed_text) == (
        "edited", "My better text.", "My better text.",
    )  # fmt: skip
    with pytest.raises(Conflict, match="reviewed already"):
        services.critique_chain_review(chain=chains[0], reviewer=rater, action="reject")
    stream = io.BytesIO()
    exporters.write_export("sft", "jsonl", selectors.ExportFilter(project_id=project.pk), stream)
    completions = sorted(json.loads(line)["completion"] for line in stream.getvalue().splitlines())
    assert completions == sorted([f"revised {prompts[0].pk}", "My better text."])
    assert set(Demonstration.objects.values_list("origin", flat=True)) == {"cai"}


@pytest.mark.django_db
def test_cai_runs_refuse_what_they_cannot_use(settings, artefacts):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    no_pairs = ProjectFactory(responses_per_task=3)
    PromptFactory(project=no_pairs)
    with pytest.raises(ApplicationError, match="no task with exactly two responses"):
        runs.ai_feedback_run_start(project=no_pairs)
    choices = services.constitution_import(name="Choices only", data=b'["Choose the kinder one."]')
    with pytest.raises(ApplicationError, match="has a critique request"):
        runs.critique_run_start(project=no_pairs, constitution=choices)


def test_ai_labels_change_the_reward_loss_as_soft_labels_weighted_by_source():
    """The reward trainer reads an AI label's probability p as the soft target, and weighs each prompt's loss
    by its source: loss = (w_human * hard + w_ai * soft) / (w_human + w_ai)."""
    from torch.nn.functional import logsigmoid

    from training.data import RankedPrompt
    from training.reward import listwise_loss, pairs_of

    prompt = [{"role": "user", "content": "question 1"}]
    hard = RankedPrompt(prompt, ["good answer", "bad answer"], [[0], [1]], source="human")
    soft = RankedPrompt(prompt, ["good answer", "bad answer"], [[0], [1]], probability=0.7, source="ai")
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])  # the better response scores 1 higher in both
    hard_loss = float(-logsigmoid(torch.tensor(1.0)))
    soft_loss = float(-(0.7 * logsigmoid(torch.tensor(1.0)) + 0.3 * logsigmoid(torch.tensor(-1.0))))
    for ai_weight in (1.0, 0.5, 0.0):
        batch = pairs_of([hard, soft], use_margin=True, source_weights={"human": 1.0, "ai": ai_weight})
        expected = (hard_loss + ai_weight * soft_loss) / (1.0 + ai_weight)
        assert float(listwise_loss(rewards, batch)) == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def chains(rater):
    project = pair_project(tasks=2)
    project.members.add(rater)
    constitution = services.constitution_default_ensure()
    made = []
    for prompt in project.prompts.order_by("id"):
        chain = CritiqueChain.objects.create(
            project=project, prompt=prompt, constitution=constitution, model_name="m",
            initial_response="A <script>alert(1)</script> first try", final_revision=f"Revised answer {prompt.pk}.",
        )  # fmt: skip
        chain.rounds.create(number=1, principle=constitution.principles.first(), critique="Too curt.",
                            revision=f"Revised answer {prompt.pk}.")  # fmt: skip
        made.append(chain)
    return project, made


@pytest.mark.django_db
def test_raters_review_chains_of_their_projects_through_the_api(chains, rater, other_rater):
    from rest_framework.test import APIClient

    project, made = chains
    client = APIClient()
    client.force_authenticate(rater)
    url = reverse("api:critique-chain-next", args=[project.slug])
    shown = client.get(url).json()
    assert shown["chain_id"] == made[0].pk and shown["final_revision"] == made[0].final_revision
    assert "<script>" not in shown["initial_response_html"] and shown["rounds"][0]["principle"] == "Helpful"
    assert client.get(url, {"exclude": str(made[0].pk)}).json()["chain_id"] == made[1].pk
    review = reverse("api:critique-chain-review", args=[made[0].pk])
    assert client.post(review, {"action": "maybe"}, format="json").status_code == 400
    done = client.post(review, {"action": "edit", "text": "Edited."}, format="json").json()
    assert (
        done["review_status"] == "edited" and Demonstration.objects.get(pk=done["demonstration_id"]).text == "Edited."
    )
    assert client.post(review, {"action": "accept"}, format="json").status_code == 409
    client.post(reverse("api:critique-chain-review", args=[made[1].pk]), {"action": "reject"}, format="json")
    assert client.get(url).status_code == 204

    outsider = APIClient()
    outsider.force_authenticate(other_rater)  # not a member of the project
    assert outsider.get(url).status_code == 404
    assert outsider.post(review, {"action": "accept"}, format="json").status_code == 404


@pytest.mark.django_db
def test_the_review_page_is_listed_for_members_with_chains_waiting(client, chains, rater):
    project, made = chains
    client.force_login(rater)
    projects = client.get(reverse("frontend:projects")).content.decode()
    assert "Review revisions (2)" in projects
    page = client.get(reverse("frontend:review", args=[project.slug]))
    assert page.status_code == 200 and b"review.js" in page.content


@pytest.mark.django_db
def test_runs_pass_source_weights_and_the_few_shot_prefix_to_the_trainer(settings, artefacts, tmp_path):
    settings.CELERY_TRAINING_QUEUE = f"unconsumed-{uuid.uuid4().hex}"
    project = pair_project(tasks=2)
    reward = runs.reward_run_start(project=project, human_weight=1.0, ai_weight=0.25)
    command = runs.trainer_command(reward, tmp_path)
    assert command[command.index("--ai-weight") + 1] == "0.25" and command[command.index("--human-weight") + 1] == "1.0"
    with pytest.raises(ApplicationError, match="Source weights"):
        runs.reward_run_start(project=project, human_weight=0, ai_weight=0)

    critique = runs.critique_run_start(project=project, few_shot="Human: hi\n\nAssistant: hello")
    runs.spec_for(critique.kind).prepare(critique, tmp_path)
    command = runs.trainer_command(critique, tmp_path)
    few_shot = command[command.index("--few-shot") + 1]
    assert Path(few_shot).read_text(encoding="utf-8") == "Human: hi\n\nAssistant: hello"
    principles = json.loads((tmp_path / "principles.json").read_text())
    assert {p["name"] for p in principles} == set(
        services.constitution_default_ensure().principles.values_list("name", flat=True)
    )
