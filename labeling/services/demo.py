"""The demo project: OpenAssistant prompts with human rankings, gold tasks and demonstrations, loaded once."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from labeling.importers import plain_prompts
from labeling.models import ComparisonTask, Judgement, Project, Prompt, Response, User
from labeling.oasst import oasst_ranked_groups
from labeling.services.content import (
    comparison_task_create,
    demonstration_create,
    judgement_create,
    project_create,
    prompt_create,
    response_create,
)
from labeling.services.evaluation import eval_prompts_split, evaluation_tasks_create

DEMO_SLUG = "oasst-demo"
DEMO_ORIGIN = "oasst1"
# The demo's evaluation: a seeded tenth of its prompts held out, and the default policy's answers to them
# (demo_data/README.md says how they were made) set against the OpenAssistant replies in blinded pairs.
DEMO_EVAL_FRACTION = 0.11
DEMO_POLICY = "smollm2-135m-instruct"
EVAL_ANSWERS_FILE = "smollm2_eval_answers.jsonl"
EVAL_AI_LABELS_FILE = "smollm2_eval_ai_labels.jsonl"
DEMO_GUIDELINES = """\
# How to judge responses

You will see a conversation and several replies written for its last message. Put the replies in order,
best first. Replies that are equally good may share a place.

A better reply is:

1. **Helpful**: it does what the user asked, in the form they asked for, and asks for clarification when
   the request is ambiguous.
2. **Truthful**: it does not invent facts, sources or quotations. Saying "I don't know" beats a confident
   wrong answer.
3. **Harmless**: it does not help anyone hurt themselves or others, and it treats every person and group
   with respect.

When these pull in different directions, truthfulness and harmlessness come before helpfulness.
Use the flags for problems you see, even in the reply you ranked first.
"""


@dataclass(frozen=True)
class DemoLoadResult:
    project: Project
    created: bool
    prompts: int = 0
    tasks: int = 0
    gold_tasks: int = 0
    judgements: int = 0
    demonstrations: int = 0
    eval_prompts: int = 0
    eval_tasks: int = 0
    ai_labels: int = 0


@transaction.atomic
def demo_project_ensure(*, data_dir: Path, members: Sequence[User], gold_every: int = 10) -> DemoLoadResult:
    """The demo project from the OpenAssistant sample, loaded once.

    Each prompt with human-ranked replies becomes a task (K = 2..9). Every ``gold_every``-th task is a
    gold task whose expected ranking is the OpenAssistant one; every other task keeps that ranking as an
    imported human judgement. The best human-written reply is also stored as a demonstration, and the
    plain prompt list becomes prompts for generation. Running it again changes nothing.
    """
    existing = Project.objects.filter(slug=DEMO_SLUG).first()
    if existing is not None:
        existing.members.add(*members)
        return DemoLoadResult(project=existing, created=False)

    project = project_create(
        name="OpenAssistant demo",
        slug=DEMO_SLUG,
        guidelines=DEMO_GUIDELINES,
        compare_enabled=True,
        rank_enabled=True,
        rate_enabled=True,
        demonstrate_enabled=True,
        responses_per_task=4,
        overlap=2,
        gold_rate=1 / gold_every,
        dataset_licence="apache-2.0",  # OpenAssistant's data (demo_data/LICENSE)
        members=members,
    )
    counts = {"prompts": 0, "tasks": 0, "gold_tasks": 0, "judgements": 0, "demonstrations": 0}
    with open(data_dir / "en_100_tree.jsonl", encoding="utf-8") as trees:
        for index, group in enumerate(oasst_ranked_groups(trees)):
            prompt = prompt_create(
                project=project, messages=group.messages, source=DEMO_ORIGIN, external_id=group.external_id
            )
            responses = {
                reply.external_id: response_create(
                    prompt=prompt,
                    text=reply.text,
                    origin=reply.origin,
                    metadata={"oasst_id": reply.external_id},
                )
                for reply in group.replies
            }
            ranking = [[responses[reply.external_id].pk for reply in tier] for tier in group.ranking_groups()]
            is_gold = index % gold_every == 0
            task = comparison_task_create(
                project=project,
                prompt=prompt,
                responses=list(responses.values()),
                gold_ranking=ranking if is_gold else None,
            )
            if not is_gold:
                judgement_create(
                    task=task,
                    ranking=ranking,
                    origin=DEMO_ORIGIN,
                    client_submission_id=group.external_id,
                )
                counts["judgements"] += 1
            best = group.ranking_groups()[0][0]
            if best.origin == Response.HUMAN:
                demonstration_create(prompt=prompt, text=best.text, origin=DEMO_ORIGIN)
                counts["demonstrations"] += 1
            counts["prompts"] += 1
            counts["tasks"] += 1
            counts["gold_tasks"] += is_gold

    with open(data_dir / "prompt_lottery_en_250_text.jsonl", encoding="utf-8") as lottery:
        for line_number, text in plain_prompts(lottery):
            prompt_create(
                project=project,
                messages=[{"role": "user", "content": text}],
                source=f"{DEMO_ORIGIN} prompt lottery",
                external_id=f"lottery-{line_number}",
            )
            counts["prompts"] += 1
    counts.update(_demo_evaluation(project, data_dir))
    return DemoLoadResult(project=project, created=True, **counts)


def _demo_evaluation(project: Project, data_dir: Path) -> dict[str, int]:
    """Eval prompts drawn with seed 0, the default policy's answers to them set against the first human reply
    to each in blinded pairwise tasks, and the AI labeller's verdicts on those tasks."""
    split = eval_prompts_split(project=project, fraction=DEMO_EVAL_FRACTION, seed=0)
    prompts = {prompt.external_id: prompt for prompt in Prompt.objects.filter(project=project, is_eval=True)}
    answers: dict[int, dict[str, Response]] = {}
    with open(data_dir / EVAL_ANSWERS_FILE, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            prompt = prompts.get(record["external_id"])
            human = Response.objects.filter(prompt=prompt, origin=Response.HUMAN).order_by("id").first()
            if prompt is None or human is None or not record["response"].strip():
                continue
            answer = response_create(prompt=prompt, text=record["response"], origin=DEMO_POLICY,
                                     metadata={"demo": "evaluation"})  # fmt: skip
            answers[prompt.pk] = {DEMO_POLICY: answer, Response.HUMAN: human}
    made = evaluation_tasks_create(project=project, answers=answers)
    by_prompt = {
        task.prompt.external_id: task
        for task in ComparisonTask.objects.filter(project=project, keep_order=True).select_related("prompt")
    }
    labels = 0
    with open(data_dir / EVAL_AI_LABELS_FILE, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            task = by_prompt.get(record["external_id"])
            if task is None:
                continue
            origins = {response.origin: response.pk for response in task.responses.all()}
            preferred = origins[record["preferred"]]
            other = next(pk for origin, pk in origins.items() if origin != record["preferred"])
            judgement_create(
                task=task, ranking=[[preferred], [other]], source=Judgement.Source.AI, origin=record["labeller"],
                probability=record["probability"], client_submission_id=f"demo-ai-{record['external_id']}-{labels}",
            )  # fmt: skip
            labels += 1
    return {"eval_prompts": split.eval_prompts, "eval_tasks": made.tasks, "ai_labels": labels}
