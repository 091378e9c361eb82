"""Every write the product makes. Each service takes keyword arguments, validates with ``full_clean()``,
runs in one transaction, and raises :class:`ApplicationError` for anything it refuses."""

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from pathlib import Path

import orjson
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, models, transaction
from django.db.models import Count, Exists, OuterRef, Subquery
from django.utils import timezone

from config.version import code_version
from labeling import rendering, selectors, validation
from labeling.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from labeling.importers import oasst_ranked_groups, plain_prompts
from labeling.models import (
    Assignment,
    ComparisonTask,
    DatasetSnapshot,
    Demonstration,
    Judgement,
    ModelVersion,
    Project,
    Prompt,
    Response,
    TaskProblemReport,
    TaskResponse,
    User,
)
from labeling.permissions import RATERS_GROUP, is_staff


def _validate(instance: models.Model, *, constraints: bool = True, exclude: Sequence[str] = ()) -> None:
    """``full_clean()``; a refusal becomes an ApplicationError naming the fields.

    ``constraints=False`` leaves the database constraints to the database (a query each saved), for hot
    paths that hold the locks which make uniqueness hold anyway; ``exclude`` skips fields already known to be
    valid (a foreign key to a row just read, for instance).
    """
    try:
        instance.full_clean(exclude=exclude, validate_unique=constraints, validate_constraints=constraints)
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
def project_update(*, project: Project, members: Sequence[User] | None = None, **fields) -> Project:
    """Change a project's settings (any Project fields) and, if given, its members."""
    for name, value in fields.items():
        setattr(project, name, value)
    _save_validated(project)
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
    _validate(prompt)
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
    _validate(response)
    response.html = rendering.html_for_storage(text)
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
    """An open task with all the judgements it needs becomes complete (one conditional UPDATE)."""
    if _tasks_complete([task.pk]):
        task.status = ComparisonTask.Status.COMPLETE
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
    _save_validated(judgement)
    task_status_refresh(task=task)
    return judgement


@transaction.atomic
def demonstration_create(*, prompt: Prompt, text: str, author: User | None = None, origin: str = "") -> Demonstration:
    demonstration = Demonstration(prompt=prompt, text=text, author=author, origin=origin)
    _save_validated(demonstration)
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
            rows = list(
                model.objects.filter(**{field: empty}).exclude(**{source: empty}).order_by("id")
                .only("id", source)[: min(HTML_BATCH, limit - done)]
            )  # fmt: skip
            if not rows:
                break
            for row in rows:
                setattr(row, field, render(row))
            with transaction.atomic():
                model.objects.bulk_update(rows, [field])
            done += len(rows)
    return done


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


# --- Assignment and submission -------------------------------------------------------------------------------
#
# A task has ``required_judgements`` slots. A slot is taken by a judgement or by a live lease (an assignment in
# state "leased" whose ``expires_at`` is still ahead). Every write that changes who holds a slot of a task
# first locks the task row (PostgreSQL: SELECT ... FOR UPDATE, SKIP LOCKED when picking; SQLite: the whole
# transaction holds the database's write lock, taken at BEGIN IMMEDIATE), then counts the slots again in a
# fresh statement, so two raters can never take the same slot.

SQLITE_LOCK_ATTEMPTS = 40
BUSY_RETRIES = 20


def _retry_when_sqlite_is_locked(service: Callable) -> Callable:
    """Run the whole transaction again when SQLite reports "database is locked" (the busy timeout ran out
    under heavy write load), so that a rater never sees that error."""

    @wraps(service)
    def wrapper(*args, **kwargs):
        for attempt in range(SQLITE_LOCK_ATTEMPTS):
            try:
                return service(*args, **kwargs)
            except OperationalError as error:
                retryable = connection.vendor == "sqlite" and "locked" in str(error) and not connection.in_atomic_block
                if not retryable or attempt == SQLITE_LOCK_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, min(0.005 * 2**attempt, 0.25)))
        raise AssertionError("unreachable")

    return wrapper


def _lease_first_free_slot(*, project: Project, rater: User, gold: bool, now: datetime) -> Assignment | None:
    passed_over: list[int] = []
    after_id = selectors.rater_last_task_id(project=project, rater=rater, gold=gold)
    while True:
        candidate = selectors.task_id_with_free_slot(
            project=project, rater=rater, gold=gold, now=now, passed_over=passed_over, after_id=after_id, lock=True
        )
        if candidate is None and after_id:
            after_id = 0  # nothing above the rater's last task: look at the ones they passed over
            continue
        if candidate is None:
            return None
        task_id, required = candidate
        # Fresh statements: they see leases and problem reports committed after the candidate query took its
        # snapshot.
        if (
            selectors.task_held_back(task_id=task_id)
            or selectors.task_slots_taken(task_id=task_id, now=now) >= required
        ):
            passed_over.append(task_id)
            continue
        shown_order = list(TaskResponse.objects.filter(task_id=task_id).values_list("response_id", flat=True))
        random.shuffle(shown_order)
        return Assignment.objects.create(
            task_id=task_id,
            rater=rater,
            leased_at=now,
            expires_at=now + project.lease_timeout,
            shown_order=shown_order,
        )


def _lease_next_in_python(*, project: Project, rater: User, now: datetime) -> Assignment | None:
    with transaction.atomic():
        # A live lease on a task held back by a problem report stays valid (a submission on it is accepted),
        # but it is not handed back: the rater moves on, and gets it again if the report is closed in time.
        current = (
            Assignment.objects.filter(
                rater=rater,
                task__project=project,
                task__status=ComparisonTask.Status.OPEN,
                state=Assignment.State.LEASED,
                expires_at__gt=now,
            )
            .exclude(Exists(selectors.open_problem_reports(task=OuterRef("task"))))
            .order_by("leased_at")
            .first()
        )
        if current is not None:
            return current
        want_gold = random.random() < project.gold_rate
        for gold in (want_gold, not want_gold):
            assignment = _lease_first_free_slot(project=project, rater=rater, gold=gold, now=now)
            if assignment is not None:
                return assignment
    return None


def _lease_next_in_postgres(*, project: Project, rater: User, now: datetime) -> Assignment | None:
    """The same steps as ``_lease_next_in_python`` (migration 0008), and the task's content for the page, in one
    round trip: the content rides on the assignment as ``content``."""
    want_gold = random.random() < project.gold_rate
    content_columns, content_joins = selectors.task_content_sql()
    sql = f"""
        WITH lease AS (SELECT * FROM labeling_lease_next(%s, %s, %s, %s, %s))
        SELECT {selectors.columns_of(Assignment, "lease")}, {content_columns}
        FROM lease JOIN {ComparisonTask._meta.db_table} t ON t.id = lease.task_id {content_joins}
        ORDER BY s.position
    """  # noqa: S608 (table and column names come from the models, values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk, rater.pk, want_gold, now, project.lease_timeout])
        rows = cursor.fetchall()
    if not rows:
        return None
    width = len(Assignment._meta.concrete_fields)
    assignment = selectors.instance_from_row(Assignment, rows[0][:width])
    assignment.content = selectors.task_content_from_rows([row[width:] for row in rows])
    return assignment


@_retry_when_sqlite_is_locked
def task_next_for_rater(*, project: Project, rater: User, now: datetime | None = None) -> Assignment | None:
    """The rater's live lease in this project, or a new lease on a task they have not seen that still has a
    free slot (gold tasks mixed in at the project's gold rate). None when nothing is left for them.

    A task with an open problem report is held back: nobody gets a new lease on it, and a live lease on it is
    not handed back either. Leases taken before the report stay valid, so their submissions are accepted."""
    lease_next = _lease_next_in_postgres if connection.vendor == "postgresql" else _lease_next_in_python
    for attempt in range(BUSY_RETRIES):
        moment = now or timezone.now()
        assignment = lease_next(project=project, rater=rater, now=moment)
        if assignment is not None:
            return assignment
        # Nothing free for us right now. If that is only because other raters hold row locks on the tasks
        # that are left (SKIP LOCKED passed over them), their transactions end within milliseconds: retry.
        if not selectors.tasks_with_free_slots(project=project, rater=rater, now=moment).exists():
            return None
        time.sleep(0.002 * (attempt + 1))
    return None


def _ranking_from_likert(likert: dict, response_ids: list[int]) -> list[list[int]]:
    """For rate-only projects: responses grouped by score, best first; every response must be scored."""
    missing = [response_id for response_id in response_ids if str(response_id) not in likert]
    if missing:
        raise ApplicationError("Score every response from 1 to 7.", {"fields": {"likert": ["Score every response."]}})
    scores = {response_id: likert[str(response_id)] for response_id in response_ids}
    if not all(isinstance(score, int) for score in scores.values()):
        raise ApplicationError("Likert scores must be whole numbers from 1 to 7.", {"fields": {"likert": []}})
    return [
        [response_id for response_id in response_ids if scores[response_id] == score]
        for score in sorted(set(scores.values()), reverse=True)
    ]


def _held_assignment(*, task_id: int, rater: User) -> Assignment:
    """The rater's assignment on a task, with the task and its project, locking both rows: every change to
    who holds a slot of this task waits here. 404 when the rater holds no such task."""
    assignment = (
        Assignment.objects.select_related("task__project")
        .select_for_update(of=("self", "task"))
        .filter(task_id=task_id, rater=rater)
        .first()
    )
    if assignment is None:
        raise NotFound(f"You hold no task {task_id}. Ask for your next task.")
    return assignment


ALREADY_JUDGED = "You have already judged this task."
SKIPPED = "You skipped this task."
CLOSED = "This task is closed."
TAKEN = "Your time on this task ran out and another rater took it. Ask for your next task."


def _check_still_held(*, assignment: Assignment, now: datetime) -> None:
    """Refuse a submission on a task the rater passed on, that closed, or whose slot went to someone else."""
    task = assignment.task
    if assignment.state == Assignment.State.SKIPPED:
        raise Conflict(SKIPPED)
    if task.status != ComparisonTask.Status.OPEN:
        raise Conflict(CLOSED)
    # A lease that ran out still counts if nobody else took the slot meanwhile.
    lease_ran_out = assignment.expires_at <= now or assignment.state == Assignment.State.EXPIRED
    if lease_ran_out and selectors.task_slots_taken(task_id=task.pk, now=now) >= task.required_judgements:
        raise Conflict(TAKEN)


def _judgement_for(*, assignment: Assignment, rater: User, now: datetime, ranking, likert, **fields) -> Judgement:
    """The validated, unsaved judgement of a submission on ``assignment``."""
    task = assignment.task
    if assignment.shown_order:
        task._response_ids = sorted(assignment.shown_order)  # the lease drew the order from them
    project = task.project
    likert = likert or {}
    if ranking is None and project.rate_enabled and not (project.compare_enabled or project.rank_enabled):
        ranking = _ranking_from_likert(likert, assignment.shown_order or task.response_ids())
    judgement = Judgement(
        task=task,
        rater=rater,
        source=Judgement.Source.HUMAN,
        ranking=ranking,
        likert=likert,
        seconds_spent=max((now - assignment.leased_at).total_seconds(), 0.0),
        shown_order=assignment.shown_order,
        **fields,
    )
    _validate(judgement, constraints=False, exclude=["task", "rater"])
    return judgement


def _row_as_json(instance: models.Model) -> str:
    """Every column of a new row, as the JSON object ``jsonb_populate_record`` reads (the primary key aside)."""
    row = {}
    for field in instance._meta.concrete_fields:
        if field.primary_key:
            continue
        value = field.pre_save(instance, add=True)
        row[field.column] = value.isoformat() if isinstance(value, datetime) else value
    return orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS).decode()


def _submit_in_python(*, assignment: Assignment, rater: User, now: datetime, fields: dict) -> Judgement:
    with transaction.atomic():
        assignment = _held_assignment(task_id=assignment.task_id, rater=rater)
        if assignment.state == Assignment.State.SUBMITTED:
            raise Conflict(ALREADY_JUDGED)
        _check_still_held(assignment=assignment, now=now)
        judgement = _judgement_for(assignment=assignment, rater=rater, now=now, **fields)
        judgement.save()
        assignment.state = Assignment.State.SUBMITTED
        assignment.save(update_fields=["state"])
        task_status_refresh(task=assignment.task)
        return judgement


SUBMIT_REFUSALS = {"submitted": ALREADY_JUDGED, "skipped": SKIPPED, "closed": CLOSED, "taken": TAKEN}


def _submit_in_postgres(*, assignment: Assignment, rater: User, now: datetime, fields: dict) -> Judgement:
    """Validate against the lease read without a lock (what is validated never changes after the lease),
    then lock, check, insert and update in one round trip (migration 0008)."""
    judgement = _judgement_for(assignment=assignment, rater=rater, now=now, **fields)
    # Inside a caller's transaction, a savepoint keeps a refused insert from spoiling it.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT outcome, judgement_id FROM labeling_judgement_submit(%s, %s, %s::jsonb)",
            [assignment.pk, now, _row_as_json(judgement)],
        )
        outcome, judgement_id = cursor.fetchone()
    if outcome == "missing":
        raise NotFound(f"You hold no task {assignment.task_id}. Ask for your next task.")
    if outcome != "created":
        raise Conflict(SUBMIT_REFUSALS[outcome])
    judgement.pk = judgement_id
    judgement._state.adding = False
    return judgement


@_retry_when_sqlite_is_locked
def judgement_submit(
    *,
    rater: User,
    task_id: int,
    client_submission_id: str,
    ranking: list[list[int]] | None = None,
    margin: float | None = None,
    all_bad: bool = False,
    likert: dict | None = None,
    flags: dict | None = None,
    rationale: str = "",
    now: datetime | None = None,
) -> tuple[Judgement, bool]:
    """Store a rater's judgement on a task they hold; ``(judgement, created)``.

    Idempotent: a retried submission with the same ``client_submission_id`` returns the stored judgement and
    stores nothing. The time spent is measured on the server, from the lease to now.
    """
    if not client_submission_id or len(client_submission_id) > 64:
        raise ApplicationError("A submission needs a client_submission_id of 1 to 64 characters.")

    def stored() -> Judgement | None:
        judgement = Judgement.objects.filter(rater=rater, client_submission_id=client_submission_id).first()
        if judgement is not None and judgement.task_id != task_id:
            raise Conflict("This client_submission_id was already used for another task.")
        return judgement

    now = now or timezone.now()
    fields = {
        "ranking": ranking,
        "margin": margin,
        "all_bad": all_bad,
        "likert": likert,
        "flags": flags or {},
        "rationale": rationale,
        "client_submission_id": client_submission_id,
    }
    assignment = selectors.assignment_of_rater(task_id=task_id, rater_id=rater.pk)
    if assignment is None:
        raise NotFound(f"You hold no task {task_id}. Ask for your next task.")
    submit = _submit_in_postgres if connection.vendor == "postgresql" else _submit_in_python
    try:
        if assignment.state == Assignment.State.SKIPPED:
            raise Conflict(SKIPPED)
        if assignment.state == Assignment.State.SUBMITTED:
            raise Conflict(ALREADY_JUDGED)
        return submit(assignment=assignment, rater=rater, now=now, fields=fields), True
    except Conflict as refusal:
        # Most likely a retry of this very submission (perhaps concurrent: it committed while this one
        # waited for the lock).
        if refusal.message == ALREADY_JUDGED and (judgement := stored()) is not None:
            return judgement, False
        raise
    except IntegrityError as error:
        if (judgement := stored()) is not None:
            return judgement, False
        if Judgement.objects.filter(task_id=task_id, rater=rater).exists():
            raise Conflict(ALREADY_JUDGED) from error
        raise ApplicationError(f"The judgement was refused: {error}") from error


@_retry_when_sqlite_is_locked
def assignment_skip(*, rater: User, task_id: int, reason: str) -> Assignment:
    """The rater passes on a task they hold, saying why; the slot returns to the pool for others."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why you skip this task.", {"fields": {"reason": ["This field is required."]}})
    with transaction.atomic():
        assignment = _held_assignment(task_id=task_id, rater=rater)
        if assignment.state == Assignment.State.SKIPPED:
            return assignment
        if assignment.state == Assignment.State.SUBMITTED:
            raise Conflict(ALREADY_JUDGED)
        assignment.state = Assignment.State.SKIPPED
        assignment.skip_reason = reason[:2000]
        assignment.save(update_fields=["state", "skip_reason"])
        return assignment


@_retry_when_sqlite_is_locked
def task_problem_report(*, rater: User, task_id: int, message: str) -> TaskProblemReport:
    """Store a rater's report of a problem with a task and pass the task on, so they are not asked to
    judge something broken. While the report is open no rater is given the task (see ``task_next_for_rater``)."""
    message = message.strip()
    if not message:
        raise ApplicationError("Describe the problem.", {"fields": {"message": ["This field is required."]}})
    with transaction.atomic():
        # The rater's assignment, then the task, in the order a submission locks them. A lease call that is
        # picking this task either commits first (its lease is then one the report leaves in place) or skips
        # the locked row, and any later look at the task sees the report.
        held = Assignment.objects.select_for_update().filter(
            task_id=task_id, rater=rater, state__in=[Assignment.State.LEASED, Assignment.State.EXPIRED]
        )
        held_ids = list(held.values_list("pk", flat=True))
        task = ComparisonTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            raise NotFound(f"There is no task {task_id}.")
        report = TaskProblemReport.objects.create(task=task, rater=rater, message=message[:5000])
        Assignment.objects.filter(pk__in=held_ids).update(
            state=Assignment.State.SKIPPED, skip_reason=f"Reported a problem: {message[:1900]}"
        )
        return report


def _task_problem_report_close(
    *, report: TaskProblemReport, outcome: str, closed_by: User, now: datetime | None
) -> TaskProblemReport:
    """Close an open report with ``outcome``, recording who closed it and when (inside the caller's
    transaction). Its task goes back to the pool once none of its reports is open."""
    if not is_staff(closed_by):
        raise PermissionDenied("Only administrators resolve or dismiss problem reports.")
    report = TaskProblemReport.objects.select_for_update().filter(pk=report.pk).first()
    if report is None:
        raise NotFound("That problem report no longer exists.")
    if report.outcome != TaskProblemReport.Outcome.OPEN:
        raise Conflict(f"Report {report.pk} is already {report.get_outcome_display().lower()}.")
    report.outcome = outcome
    report.closed_by = closed_by
    report.closed_at = now or timezone.now()
    _validate(report, exclude=["task", "rater", "closed_by"])
    report.save(update_fields=["outcome", "closed_by", "closed_at"])
    return report


@transaction.atomic
def task_problem_report_resolve(
    *, report: TaskProblemReport, closed_by: User, now: datetime | None = None
) -> TaskProblemReport:
    """An admin fixed what the report points at (a cut-off response edited, say): the task goes back to the
    pool. Staff only."""
    return _task_problem_report_close(
        report=report, outcome=TaskProblemReport.Outcome.RESOLVED, closed_by=closed_by, now=now
    )


@transaction.atomic
def task_problem_report_dismiss(
    *, report: TaskProblemReport, closed_by: User, now: datetime | None = None
) -> TaskProblemReport:
    """An admin found nothing wrong with the task: the report is set aside and the task goes back to the pool
    unchanged. Staff only."""
    return _task_problem_report_close(
        report=report, outcome=TaskProblemReport.Outcome.DISMISSED, closed_by=closed_by, now=now
    )


@_retry_when_sqlite_is_locked
def demonstration_submit(
    *, author: User, prompt: Prompt, text: str, client_submission_id: str
) -> tuple[Demonstration, bool]:
    """Store a rater's ideal reply to a prompt; a retried submission returns the stored one."""
    if not client_submission_id or len(client_submission_id) > 64:
        raise ApplicationError("A submission needs a client_submission_id of 1 to 64 characters.")
    if not text.strip():
        raise ApplicationError("Write a reply before submitting.", {"fields": {"text": ["This field is required."]}})

    def stored() -> Demonstration | None:
        return Demonstration.objects.filter(author=author, client_submission_id=client_submission_id).first()

    if (existing := stored()) is not None:
        return existing, False
    try:
        with transaction.atomic():
            # Serialise submissions on this prompt, then look again: a double-clicked submit waits here.
            Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
            if (existing := stored()) is not None:
                return existing, False
            demonstration = Demonstration(
                prompt=prompt, author=author, text=text, client_submission_id=client_submission_id
            )
            _save_validated(demonstration)
            return demonstration, True
    except IntegrityError:
        if (existing := stored()) is not None:
            return existing, False
        raise


# --- Imports -------------------------------------------------------------------------------------------------

IMPORT_BATCH = 2000


@dataclass
class ImportResult:
    kind: str
    records: int
    created: dict[str, int]
    skipped: dict[str, int]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "records": self.records, "created": self.created, "skipped": self.skipped}


def _chunks(values: Sequence, size: int = IMPORT_BATCH):
    for start in range(0, len(values), size):
        yield values[start : start + size]


class _Progress:
    """Reports (stage, done, total) to an optional callback, e.g. a progress bar."""

    def __init__(self, callback: Callable[[str, int, int], None] | None) -> None:
        self.callback = callback

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(stage, done, total)


def _insert(model: type[models.Model], rows: list[dict]) -> list[int]:
    """Insert many new rows, given as ``{field attname: value}`` (other fields take their defaults); returns
    their primary keys in order.

    On PostgreSQL the ids come from the table's sequence and the rows go in with COPY, without building a
    model instance per row: several times faster for imports of hundreds of thousands of rows. Elsewhere this
    is ``bulk_create``. Rows must be valid already: this writes them as they are.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        objects = model.objects.bulk_create([model(**row) for row in rows], batch_size=IMPORT_BATCH)
        return [obj.pk for obj in objects]
    from psycopg.types.json import Jsonb

    now = timezone.now()
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    defaults = {}
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            defaults[field.attname] = now
        else:
            defaults[field.attname] = field.get_default()  # "" for text fields that are not nullable
    json_fields = {field.attname for field in fields if isinstance(field, models.JSONField)}
    table = model._meta.db_table
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, model._meta.pk.column, len(rows)],
        )
        ids = [pk for (pk,) in cursor.fetchall()]
        columns = ", ".join(quote(name) for name in [model._meta.pk.column, *(field.column for field in fields)])
        with cursor.cursor.copy(f"COPY {quote(table)} ({columns}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows, strict=True):
                values = [pk]
                for field in fields:
                    value = row.get(field.attname, defaults[field.attname])
                    if value is not None and field.attname in json_fields:
                        value = Jsonb(value)
                    values.append(value)
                copy.write_row(values)
    return ids


def _import_prompts(
    project: Project, items: list, created: Counter, skipped: Counter, progress
) -> tuple[list[int], set[int]]:
    """The prompt id of every item (an existing prompt with the same external id or conversation, or a new
    one), and the ids of the new prompts."""
    hashes = [Prompt.hash_messages(item.prompt.messages) for item in items]
    external_ids = sorted({item.prompt.external_id for item in items if item.prompt.external_id})
    by_external: dict[str, int] = {}
    for chunk in _chunks(external_ids):
        by_external.update(
            Prompt.objects.filter(project=project, external_id__in=chunk).values_list("external_id", "id")
        )
    by_hash: dict[str, int] = {}
    for chunk in _chunks(sorted(set(hashes))):
        for content_hash, prompt_id in Prompt.objects.filter(project=project, content_hash__in=chunk).values_list(
            "content_hash", "id"
        ):
            by_hash.setdefault(content_hash, prompt_id)

    keys: list[str] = []
    known: dict[str, int] = {}
    new: dict[str, dict] = {}
    for item, content_hash in zip(items, hashes, strict=True):
        external_id = item.prompt.external_id
        key = f"x:{external_id}" if external_id else f"h:{content_hash}"
        keys.append(key)
        if key in known or key in new:
            continue
        existing = by_external.get(external_id) if external_id else None
        if existing is None:
            existing = by_hash.get(content_hash)
        if existing is not None:
            known[key] = existing
            continue
        new[key] = {
            "project_id": project.pk,
            "messages": item.prompt.messages,
            "source": "import",
            "external_id": external_id,
            "content_hash": content_hash,
            "metadata": item.prompt.metadata,
        }
    new_ids = _insert(Prompt, list(new.values()))
    known.update(zip(new, new_ids, strict=True))
    progress("prompts", len(new), len(new))
    created["prompts"] += len(new)
    skipped["prompts"] += len(items) - len(new)
    return [known[key] for key in keys], set(new_ids)


def _existing_for_prompts(model, prompt_ids: set[int], fields: tuple[str, ...]) -> list[tuple]:
    rows: list[tuple] = []
    for chunk in _chunks(sorted(prompt_ids)):
        rows.extend(model.objects.filter(prompt_id__in=chunk).values_list(*fields))
    return rows


def _line_error(line: int, field_name: str, problem: str) -> ApplicationError:
    return ApplicationError(f"Line {line}, field '{field_name}': {problem}", {"line": line, "field": field_name})


@transaction.atomic
def dataset_import(
    *,
    project: Project,
    items: list,
    kind: str,
    origin: str,
    response_origin: str = "imported",
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportResult:
    """Write parsed import items (``importers.ItemIn``) to the project, all or nothing.

    Duplicates are skipped and counted: a prompt with the same external id (or the same conversation), a
    response with the same text on the same prompt, a task over the same responses, a judgement with the
    same key from the same origin (or rater), a demonstration with the same text. Importing a file twice
    therefore changes nothing the second time. ``origin`` names where judgements and demonstrations without
    a rater came from.
    """
    report = _Progress(progress)
    created: Counter = Counter()
    skipped: Counter = Counter()
    prompt_ids, new_prompt_ids = _import_prompts(project, items, created, skipped, report)
    paired = list(zip(items, prompt_ids, strict=True))
    # Prompts created by this import have no responses, tasks or demonstrations yet: no need to look.
    earlier = {prompt_id for prompt_id in prompt_ids if prompt_id not in new_prompt_ids}

    # Responses, keyed by (prompt id, text).
    with_responses = [(item, prompt_id) for item, prompt_id in paired if item.responses]
    response_ids: dict[tuple[int, str], int] = {}
    for prompt_id, text, response_id in _existing_for_prompts(
        Response, {prompt_id for _, prompt_id in with_responses} & earlier, ("prompt_id", "text", "id")
    ):
        response_ids.setdefault((prompt_id, text), response_id)
    new_responses: dict[tuple[int, str], dict] = {}
    for item, prompt_id in with_responses:
        texts = [response.text for response in item.responses]
        if len(set(texts)) != len(texts):
            raise _line_error(item.line, "responses", "two responses have the same text.")
        for response in item.responses:
            key = (prompt_id, response.text)
            if key in response_ids or key in new_responses:
                skipped["responses"] += 1
                continue
            new_responses[key] = {
                "prompt_id": prompt_id,
                "text": response.text,
                "origin": response.origin or response_origin,
            }
    response_ids.update(zip(new_responses, _insert(Response, list(new_responses.values())), strict=True))
    report("responses", len(new_responses), len(new_responses))
    created["responses"] += len(new_responses)

    # Tasks, keyed by (prompt id, the set of its responses).
    task_ids: dict[tuple[int, frozenset], int] = {}
    existing_slots: dict[int, list[int]] = {}
    prompt_of_task: dict[int, int] = {}
    for chunk in _chunks(sorted({prompt_id for _, prompt_id in with_responses} & earlier)):
        for task_id, prompt_id, response_id in TaskResponse.objects.filter(task__prompt_id__in=chunk).values_list(
            "task_id", "task__prompt_id", "response_id"
        ):
            existing_slots.setdefault(task_id, []).append(response_id)
            prompt_of_task[task_id] = prompt_id
    for task_id, slots in existing_slots.items():
        task_ids.setdefault((prompt_of_task[task_id], frozenset(slots)), task_id)
    item_tasks: list[tuple[object, tuple, list[int]]] = []
    new_tasks: dict[tuple[int, frozenset], list[int]] = {}
    for item, prompt_id in with_responses:
        ordered = [response_ids[(prompt_id, response.text)] for response in item.responses]
        key = (prompt_id, frozenset(ordered))
        item_tasks.append((item, key, ordered))
        if key in task_ids or key in new_tasks:
            skipped["tasks"] += 1
            continue
        new_tasks[key] = ordered
    task_rows = [
        {"project_id": project.pk, "prompt_id": prompt_id, "required_judgements": project.overlap}
        for prompt_id, _ in new_tasks
    ]
    task_ids.update(zip(new_tasks, _insert(ComparisonTask, task_rows), strict=True))
    _insert(
        TaskResponse,
        [
            {"task_id": task_ids[key], "response_id": response_id, "position": position}
            for key, ordered in new_tasks.items()
            for position, response_id in enumerate(ordered)
        ],
    )
    report("tasks", len(new_tasks), len(new_tasks))
    created["tasks"] += len(new_tasks)

    # Judgements: the ranking's positions become the task's response ids.
    rater_names = sorted({j.rater for item, _, _ in item_tasks for j in item.judgements if j.rater})
    raters: dict[str, int] = {}
    for chunk in _chunks(rater_names):
        raters.update(User.objects.filter(username__in=chunk).values_list("username", "id"))
    candidates: list[dict] = []
    for item, key, ordered in item_tasks:
        for judgement in item.judgements:
            try:
                validation.validate_flags(
                    {str(position): names for position, names in judgement.flags.items()},
                    range(len(ordered)),
                    Judgement.Flag.values,
                )
            except ValidationError as error:
                raise _line_error(item.line, "flags", error.messages[0]) from None
            rater_id = raters.get(judgement.rater) if judgement.source == Judgement.Source.HUMAN else None
            judgement_origin = judgement.origin or origin
            if judgement.rater and rater_id is None:
                judgement_origin = judgement.rater  # a rater of another system: keep their name as the origin
            candidates.append(
                {
                    "task_id": task_ids[key],
                    "rater_id": rater_id,
                    "source": judgement.source,
                    "origin": "" if rater_id else judgement_origin,
                    "ranking": [[ordered[position] for position in tier] for tier in judgement.ranking],
                    "margin": judgement.margin,
                    "likert": {str(ordered[position]): score for position, score in judgement.likert.items()},
                    "flags": {str(ordered[position]): names for position, names in judgement.flags.items()},
                    "client_submission_id": judgement.key[:64],
                    "probability": judgement.probability,
                }
            )
    seen: set[tuple] = set()
    for chunk in _chunks(sorted({row["client_submission_id"] for row in candidates})):
        for rater_id, judgement_origin, key in Judgement.objects.filter(client_submission_id__in=chunk).values_list(
            "rater_id", "origin", "client_submission_id"
        ):
            seen.add(("rater", rater_id, key) if rater_id else ("origin", judgement_origin, key))
    for chunk in _chunks(sorted({row["task_id"] for row in candidates if row["rater_id"]})):
        seen.update(
            ("task", rater_id, task_id)
            for rater_id, task_id in Judgement.objects.filter(task_id__in=chunk, rater__isnull=False).values_list(
                "rater_id", "task_id"
            )
        )
    new_judgements = []
    for row in candidates:
        rater_id = row["rater_id"]
        identity = (
            ("rater", rater_id, row["client_submission_id"])
            if rater_id
            else ("origin", row["origin"], row["client_submission_id"])
        )
        once_per_task = ("task", rater_id, row["task_id"])
        if identity in seen or (rater_id and once_per_task in seen):
            skipped["judgements"] += 1
            continue
        seen.update({identity, once_per_task} if rater_id else {identity})
        new_judgements.append(row)
    _insert(Judgement, new_judgements)
    report("judgements", len(new_judgements), len(new_judgements))
    created["judgements"] += len(new_judgements)
    for chunk in _chunks(sorted({row["task_id"] for row in new_judgements})):
        _tasks_complete(chunk)

    # Demonstrations, keyed by (prompt id, text).
    demonstrations: set[tuple[int, str]] = set(
        _existing_for_prompts(
            Demonstration,
            {prompt_id for item, prompt_id in paired if item.demonstration} & earlier,
            ("prompt_id", "text"),
        )
    )
    new_demonstrations = []
    for item, prompt_id in paired:
        if item.demonstration is None:
            continue
        if (prompt_id, item.demonstration) in demonstrations:
            skipped["demonstrations"] += 1
            continue
        demonstrations.add((prompt_id, item.demonstration))
        new_demonstrations.append({"prompt_id": prompt_id, "text": item.demonstration, "origin": origin})
    _insert(Demonstration, new_demonstrations)
    created["demonstrations"] += len(new_demonstrations)
    return ImportResult(
        kind=kind,
        records=len({item.line for item in items}),
        created={what: count for what, count in created.items() if count},
        skipped={what: count for what, count in skipped.items() if count},
    )


def _tasks_complete(task_ids: Sequence[int]) -> int:
    """Open tasks among ``task_ids`` that have all the human judgements they need become complete (AI feedback
    labels do not fill a task's slots)."""
    judgements = (
        Judgement.objects.filter(task=OuterRef("pk"), source=Judgement.Source.HUMAN)
        .order_by()
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return ComparisonTask.objects.filter(
        pk__in=task_ids, status=ComparisonTask.Status.OPEN, required_judgements__lte=Subquery(judgements)
    ).update(status=ComparisonTask.Status.COMPLETE, updated_at=timezone.now())


# --- Snapshots -----------------------------------------------------------------------------------------------


class _HashingWriter:
    """A binary stream that hashes what passes through it."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self.stream.closed


def dataset_snapshot_create(
    *,
    project: Project,
    kind: str,
    file_format: str = "jsonl",
    selection: selectors.ExportFilter | None = None,
    conversational: bool = False,
    created_by: User | None = None,
) -> DatasetSnapshot:
    """Freeze an export: write the file under the artefacts folder (read-only), then record its sha256, row
    counts, filter and code version. Should recording fail, the file is removed again."""
    from labeling import exporters

    selection = selection or selectors.ExportFilter(project_id=project.pk)
    if selection.project_id != project.pk:
        raise ApplicationError("The export filter names another project.")
    folder = Path(settings.ARTEFACTS_DIR) / "snapshots" / project.slug
    folder.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
    final = folder / f"{stamp}-{kind}.{file_format}"
    partial = final.with_suffix(final.suffix + ".partial")
    try:
        with open(partial, "wb") as raw:
            stream = _HashingWriter(raw)
            stats = exporters.write_export(kind, file_format, selection, stream, conversational=conversational)
        partial.chmod(0o444)
        partial.rename(final)
        with transaction.atomic():
            return DatasetSnapshot.objects.create(
                project=project,
                kind=kind,
                file_format=file_format,
                filters={**selection.as_dict(), "conversational": conversational},
                path=str(final.relative_to(settings.ARTEFACTS_DIR)),
                sha256=stream.digest.hexdigest(),
                row_count=stats.rows,
                counts=stats.as_dict(),
                code_version=code_version(),
                created_by=created_by,
            )
    except BaseException:
        for leftover in (partial, final):
            leftover.unlink(missing_ok=True)
        raise


def snapshot_path(snapshot: DatasetSnapshot) -> Path:
    return Path(settings.ARTEFACTS_DIR) / snapshot.path


def dataset_import_file(
    *,
    project: Project,
    source,
    name: str,
    file_format: str = "auto",
    kind: str = "auto",
    origin: str = "",
    response_origin: str = "imported",
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportResult:
    """Read, check and import a whole file (JSONL, CSV or Parquet) in one transaction: a bad record stops
    the import before anything is written, with an error that names its line and field."""
    from labeling import importers

    file_format = importers.file_format_for(name, file_format)
    records = importers.read_records(source, file_format)
    if progress is not None:
        records = _counting(records, progress)
    kind, items = importers.parse_records(records, kind)
    return dataset_import(
        project=project,
        items=items,
        kind=kind,
        origin=origin or Path(name).name,
        response_origin=response_origin,
        progress=progress,
    )


def _counting(records, progress: Callable[[str, int, int], None]):
    for count, record in enumerate(records, start=1):
        if count % 1000 == 0:
            progress("reading", count, 0)
        yield record


# --- Constitutions -------------------------------------------------------------------------------------------


@transaction.atomic
def constitution_import(*, name: str, data: bytes | str, description: str = "", make_default: bool = False):
    """A new constitution from JSON in one of the layouts ``labeling.constitution`` reads; nothing is written
    when the file is refused."""
    from labeling.constitution import ConstitutionFormatError, parse_constitution
    from labeling.models import Constitution, Principle

    name = name.strip()
    if not name:
        raise ApplicationError("Give the constitution a name.", {"fields": {"name": ["This field is required."]}})
    if Constitution.objects.filter(name=name).exists():
        raise Conflict(f"There is already a constitution named '{name}'.")
    try:
        principles = parse_constitution(data)
    except ConstitutionFormatError as error:
        raise ApplicationError(f"The constitution file was refused: {error}") from None
    constitution = Constitution.objects.create(name=name, description=description)
    Principle.objects.bulk_create(
        Principle(constitution=constitution, position=position, **principle)
        for position, principle in enumerate(principles)
    )
    if make_default:
        constitution_make_default(constitution=constitution)
    return constitution


@transaction.atomic
def constitution_make_default(*, constitution):
    from labeling.models import Constitution

    Constitution.objects.filter(is_default=True).exclude(pk=constitution.pk).update(is_default=False)
    Constitution.objects.filter(pk=constitution.pk).update(is_default=True)
    constitution.refresh_from_db()
    return constitution


@transaction.atomic
def critique_chain_review(*, chain, reviewer: User, action: str, text: str = ""):
    """A rater's review of a chain's final revision: accept it, accept an edit of it, or reject it. Accepting
    stores the text as a demonstration (origin ``cai``), so it exports as SFT data. Reviewed once."""
    from labeling.models import CritiqueChain

    chain = CritiqueChain.objects.select_for_update().get(pk=chain.pk)
    if chain.review_status != CritiqueChain.ReviewStatus.PENDING:
        raise Conflict("This chain has been reviewed already.")
    if action not in ("accept", "edit", "reject"):
        raise ApplicationError("The action is accept, edit or reject.", {"fields": {"action": ["Unknown action."]}})
    if action == "edit" and not text.strip():
        raise ApplicationError("An edit needs the edited text.", {"fields": {"text": ["This field is required."]}})
    chain.reviewed_by = reviewer
    if action == "reject":
        chain.review_status = CritiqueChain.ReviewStatus.REJECTED
    else:
        final = text.strip() if action == "edit" else chain.final_revision
        chain.review_status = (
            CritiqueChain.ReviewStatus.EDITED if action == "edit" else CritiqueChain.ReviewStatus.ACCEPTED
        )
        chain.reviewed_text = final if action == "edit" else ""
        chain.demonstration = demonstration_create(prompt=chain.prompt, text=final, author=reviewer, origin="cai")
    chain.save()
    return chain


@transaction.atomic
def constitution_default_ensure():
    """The shipped default constitution (made by a migration): created again if it was deleted, made the
    default if no other constitution is."""
    from labeling.constitution import DEFAULT_DESCRIPTION, DEFAULT_NAME, DEFAULT_PRINCIPLES
    from labeling.models import Constitution, Principle

    constitution, created = Constitution.objects.get_or_create(
        name=DEFAULT_NAME, defaults={"description": DEFAULT_DESCRIPTION}
    )
    if created:
        Principle.objects.bulk_create(
            Principle(constitution=constitution, position=position, name=name, critique_request=critique,
                      revision_request=revision, comparison_question=question)
            for position, (name, critique, revision, question) in enumerate(DEFAULT_PRINCIPLES)
        )  # fmt: skip
    if not Constitution.objects.filter(is_default=True).exists():
        constitution = constitution_make_default(constitution=constitution)
    return constitution
