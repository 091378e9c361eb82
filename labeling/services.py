"""Every write the product makes. Each service takes keyword arguments, validates with ``full_clean()``,
runs in one transaction, and raises :class:`ApplicationError` for anything it refuses."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from labeling import validation
from labeling.errors import ApplicationError
from labeling.importers import oasst_ranked_groups, plain_prompts
from labeling.models import (
    Assignment,
    ComparisonTask,
    Demonstration,
    Judgement,
    ModelVersion,
    Project,
    Prompt,
    Response,
    TaskResponse,
    User,
)
from labeling.permissions import RATERS_GROUP


def _validate(instance: models.Model) -> None:
    """``full_clean()``; a refusal becomes an ApplicationError naming the fields."""
    try:
        instance.full_clean()
    except ValidationError as error:
        fields = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
        first_field, messages = next(iter(fields.items()))
        where = "" if first_field == "__all__" else f"{first_field}: "
        raise ApplicationError(f"{where}{messages[0]}", {"fields": fields}) from error


def _save_validated(instance: models.Model) -> None:
    _validate(instance)
    instance.save()


@transaction.atomic
def project_create(*, name: str, slug: str, members: Sequence[User] = (), **options) -> Project:
    """Create a project. ``options`` are Project fields (guidelines, overlap, gold_rate, ...)."""
    project = Project(name=name, slug=slug, **options)
    _save_validated(project)
    project.members.set(members)
    return project


@transaction.atomic
def prompt_create(
    *,
    project: Project,
    messages: list[dict],
    source: str = "",
    external_id: str = "",
    metadata: dict | None = None,
) -> Prompt:
    prompt = Prompt(project=project, messages=messages, source=source, external_id=external_id, metadata=metadata or {})
    _save_validated(prompt)
    return prompt


@transaction.atomic
def response_create(
    *,
    prompt: Prompt,
    text: str,
    origin: str = Response.HUMAN,
    model_version: ModelVersion | None = None,
    metadata: dict | None = None,
) -> Response:
    if model_version is not None:
        origin = model_version.name
    response = Response(prompt=prompt, text=text, origin=origin, model_version=model_version, metadata=metadata or {})
    _save_validated(response)
    return response


@transaction.atomic
def comparison_task_create(
    *,
    project: Project,
    prompt: Prompt,
    responses: Sequence[Response],
    required_judgements: int | None = None,
    gold_ranking: list[list[int]] | None = None,
) -> ComparisonTask:
    """A task comparing ``responses`` (2..9 answers to ``prompt``), in the order given.

    ``required_judgements`` defaults to the project's overlap; a ``gold_ranking`` makes it a gold task.
    """
    try:
        validation.validate_response_count(len(responses))
    except ValidationError as error:
        raise ApplicationError(error.messages[0], {"fields": {"responses": error.messages}}) from error
    task = ComparisonTask(
        project=project,
        prompt=prompt,
        required_judgements=required_judgements or project.overlap,
        is_gold=gold_ranking is not None,
        gold_ranking=gold_ranking,
    )
    _save_validated(task)
    # The responses and the gold ranking can only be checked once the responses are attached; a refusal
    # rolls the task back with them.
    TaskResponse.objects.bulk_create(
        TaskResponse(task=task, response=response, position=position) for position, response in enumerate(responses)
    )
    _validate(task)
    return task


def task_status_refresh(*, task: ComparisonTask) -> ComparisonTask:
    """An open task with all the judgements it needs becomes complete."""
    if task.status == ComparisonTask.Status.OPEN and task.judgements.count() >= task.required_judgements:
        task.status = ComparisonTask.Status.COMPLETE
        task.save(update_fields=["status", "updated_at"])
    return task


@transaction.atomic
def judgement_create(
    *,
    task: ComparisonTask,
    ranking: list[list[int]],
    client_submission_id: str,
    rater: User | None = None,
    source: str = Judgement.Source.HUMAN,
    origin: str = "",
    margin: float | None = None,
    likert: dict | None = None,
    flags: dict | None = None,
    rationale: str = "",
    seconds_spent: float | None = None,
    shown_order: list[int] | None = None,
    probability: float | None = None,
) -> Judgement:
    """Store one judgement exactly as given, then mark the task complete if it has enough."""
    judgement = Judgement(
        task=task,
        rater=rater,
        source=source,
        origin=origin,
        ranking=ranking,
        margin=margin,
        likert=likert or {},
        flags=flags or {},
        rationale=rationale,
        seconds_spent=seconds_spent,
        shown_order=shown_order or [],
        client_submission_id=client_submission_id,
        probability=probability,
    )
    _save_validated(judgement)
    task_status_refresh(task=task)
    return judgement


@transaction.atomic
def demonstration_create(*, prompt: Prompt, text: str, author: User | None = None, origin: str = "") -> Demonstration:
    demonstration = Demonstration(prompt=prompt, text=text, author=author, origin=origin)
    _save_validated(demonstration)
    return demonstration


@transaction.atomic
def assignment_expire_stale(*, now: datetime | None = None) -> int:
    """Mark leases that ran out as expired, which returns their tasks to the pool. Returns how many."""
    now = now or timezone.now()
    return Assignment.objects.filter(state=Assignment.State.LEASED, expires_at__lte=now).update(
        state=Assignment.State.EXPIRED
    )


@transaction.atomic
def rater_ensure(*, username: str, password: str, staff: bool = False, reset_password: bool = False) -> User:
    """A demo or test account: created if missing; staff are superusers, others join the raters group."""
    user, created = User.objects.get_or_create(username=username)
    if created or reset_password:
        user.set_password(password)
    user.is_staff = user.is_superuser = staff
    user.save()
    if not staff:
        user.groups.add(Group.objects.get_or_create(name=RATERS_GROUP)[0])
    return user


DEMO_SLUG = "oasst-demo"
DEMO_ORIGIN = "oasst1"
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
    return DemoLoadResult(project=project, created=True, **counts)
