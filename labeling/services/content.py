"""Writes of a project's content one row at a time: projects, prompts, responses, comparison tasks,
judgements and demonstrations as given (imports and the demo use them; raters' own work goes through
``assignment``), the stored HTML, and accounts."""

from collections import Counter
from collections.abc import Sequence

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone

from labeling import rendering, validation
from labeling.errors import ApplicationError
from labeling.models import (
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
from labeling.services.routing import model_in_loop_refresh_later
from labeling.services.saving import save_validated, validate


@transaction.atomic
def project_create(*, name: str, slug: str, members: Sequence[User] = (), **options) -> Project:
    """Create a project. ``options`` are Project fields (guidelines, overlap, gold_rate, ...)."""
    project = Project(name=name, slug=slug, **options)
    save_validated(project)
    project.members.set(members)
    return project


@transaction.atomic
def project_update(*, project: Project, members: Sequence[User] | None = None, **fields) -> Project:
    """Change a project's settings (any Project fields) and, if given, its members. A new task order has the
    open tasks placed again."""
    reordered = "task_order" in fields and fields["task_order"] != project.task_order
    for name, value in fields.items():
        setattr(project, name, value)
    save_validated(project)
    if reordered:
        model_in_loop_refresh_later(project=project)
    if members is not None:
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
    validate(prompt)
    prompt.messages_html = rendering.messages_html_for_storage(messages)
    prompt.save()
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
    validate(response)
    response.html = rendering.html_for_storage(text)
    response.save()
    return response


@transaction.atomic
def prompt_save(*, prompt: Prompt) -> Prompt:
    """Store a prompt edited in place (the admin's form), with its HTML rendered again."""
    validate(prompt)
    prompt.messages_html = rendering.messages_html_for_storage(prompt.messages)
    prompt.save()
    return prompt


@transaction.atomic
def response_save(*, response: Response) -> Response:
    """Store a response edited in place or added (the admin's forms), with its HTML rendered again."""
    validate(response)
    response.html = rendering.html_for_storage(response.text)
    response.save()
    return response


@transaction.atomic
def comparison_task_create(
    *,
    project: Project,
    prompt: Prompt,
    responses: Sequence[Response],
    required_judgements: int | None = None,
    gold_ranking: list[list[int]] | None = None,
    keep_order: bool = False,
) -> ComparisonTask:
    """A task comparing ``responses`` (2..9 answers to ``prompt``), in the order given.

    ``required_judgements`` defaults to the project's overlap; a ``gold_ranking`` makes it a gold task;
    ``keep_order`` shows the responses in this order to every rater instead of a new random order to each.
    """
    try:
        validation.validate_response_count(len(responses))
    except ValidationError as error:
        raise ApplicationError(error.messages[0], {"fields": {"responses": error.messages}}) from error
    repeated = sorted(pk for pk, count in Counter(response.pk for response in responses).items() if count > 1)
    if repeated:
        message = f"A task compares different responses; {', '.join(map(str, repeated))} appears more than once."
        raise ApplicationError(message, {"fields": {"responses": [message]}})
    task = ComparisonTask(
        project=project,
        prompt=prompt,
        required_judgements=required_judgements or project.overlap,
        is_gold=gold_ranking is not None,
        gold_ranking=gold_ranking,
        keep_order=keep_order,
    )
    save_validated(task)
    # The responses and the gold ranking can only be checked once the responses are attached; a refusal
    # rolls the task back with them.
    TaskResponse.objects.bulk_create(
        TaskResponse(task=task, response=response, position=position) for position, response in enumerate(responses)
    )
    validate(task)
    return task


@transaction.atomic
def comparison_task_update(*, task: ComparisonTask, **fields) -> ComparisonTask:
    """Change a task's settings (``required_judgements``, ``status``) and keep its status true to its
    judgements: an open task that has all the human judgements it now needs is complete, and a complete task
    whose required judgements were raised above what it has goes back to open (unless the status was set in the
    same change). An archived task stays archived."""
    raised = "required_judgements" in fields and fields["required_judgements"] > task.required_judgements
    for name, value in fields.items():
        setattr(task, name, value)
    validate(task)
    task.save()
    reopen = raised and "status" not in fields and task.status == ComparisonTask.Status.COMPLETE
    if reopen and Judgement.objects.filter(task=task, source=Judgement.Source.HUMAN).count() < task.required_judgements:
        task.status = ComparisonTask.Status.OPEN
        task.save(update_fields=["status", "updated_at"])
    return task_status_refresh(task=task)


def task_status_refresh(*, task: ComparisonTask) -> ComparisonTask:
    """An open task with all the judgements it needs becomes complete (one conditional UPDATE)."""
    if task_statuses_refresh(task_ids=[task.pk]):
        task.status = ComparisonTask.Status.COMPLETE
    return task


def task_statuses_refresh(*, task_ids: Sequence[int]) -> int:
    """Open tasks among ``task_ids`` that have all the human judgements they need become complete (AI feedback
    labels do not fill a task's slots). A gold task stays open: every rater may judge it once."""
    judgements = (
        Judgement.objects.filter(task=OuterRef("pk"), source=Judgement.Source.HUMAN)
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return ComparisonTask.objects.filter(
        pk__in=task_ids,
        status=ComparisonTask.Status.OPEN,
        is_gold=False,
        required_judgements__lte=Subquery(judgements),
    ).update(status=ComparisonTask.Status.COMPLETE, updated_at=timezone.now())


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
    principle=None,
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
        principle=principle,
    )
    save_validated(judgement)
    task_status_refresh(task=task)
    return judgement


@transaction.atomic
def demonstration_create(*, prompt: Prompt, text: str, author: User | None = None, origin: str = "") -> Demonstration:
    demonstration = Demonstration(prompt=prompt, text=text, author=author, origin=origin)
    save_validated(demonstration)
    return demonstration


HTML_BATCH = 500


def stored_html_fill(*, limit: int = 20_000) -> int:
    """Render and store the HTML of up to ``limit`` prompts and responses stored without it (imports leave it
    to this job, run every minute by Celery beat). Each batch commits on its own. Returns how many rows."""
    done = 0
    for model, field, source, empty, render in (
        (Prompt, "messages_html", "messages", [], lambda prompt: rendering.messages_html_for_storage(prompt.messages)),
        (Response, "html", "text", "", lambda response: rendering.html_for_storage(response.text)),
    ):
        while done < limit:
            rows: list = list(  # Prompt or Response rows, by the loop's model
                model._default_manager.filter(**{field: empty}).exclude(**{source: empty}).order_by("id")
                .only("id", source)[: min(HTML_BATCH, limit - done)]
            )  # fmt: skip
            if not rows:
                break
            for row in rows:
                setattr(row, field, render(row))
            with transaction.atomic():
                model._default_manager.bulk_update(rows, [field])
            done += len(rows)
    return done


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
