"""The rater's loop: leasing the next task, submitting or skipping it, and submitting a demonstration (problem
reports are in ``reports``). Every path here is safe under concurrent raters.

A task has ``required_judgements`` slots. A slot is taken by a judgement or by a live lease (an assignment in
state "leased" whose ``expires_at`` is still ahead). Every write that changes who holds a slot of a task
first locks the task row (PostgreSQL: SELECT ... FOR UPDATE, SKIP LOCKED when picking; SQLite: the whole
transaction holds the database's write lock, taken at BEGIN IMMEDIATE), then counts the slots again in a
fresh statement, so two raters can never take the same slot.
"""

import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from functools import wraps

import orjson
from django.db import IntegrityError, OperationalError, connection, models, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from labeling import selectors
from labeling.errors import ApplicationError, Conflict, NotFound
from labeling.models import (
    Assignment,
    ComparisonTask,
    Demonstration,
    Judgement,
    Project,
    Prompt,
    TaskResponse,
    User,
)
from labeling.quality import gold_score
from labeling.raw_sql import columns_of, instance_from_row, task_content_sql
from labeling.services import quality
from labeling.services.content import task_status_refresh
from labeling.services.saving import save_validated, validate


@transaction.atomic
def assignment_expire_stale(*, now: datetime | None = None) -> int:
    """Mark leases that ran out as expired, which returns their tasks to the pool. Returns how many."""
    now = now or timezone.now()
    return Assignment.objects.filter(state=Assignment.State.LEASED, expires_at__lte=now).update(
        state=Assignment.State.EXPIRED
    )


SQLITE_LOCK_ATTEMPTS = 40
BUSY_RETRIES = 20


def retry_when_sqlite_is_locked(service: Callable) -> Callable:
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
    by_priority = project.task_order != Project.TaskOrder.FIFO
    after_priority: float | None = None
    if by_priority:
        after_priority, after_id = selectors.rater_priority_cursor(project=project, rater=rater, gold=gold) or (None, 0)
    else:
        after_id = selectors.rater_last_task_id(project=project, rater=rater, gold=gold)
    while True:
        candidate = selectors.task_id_with_free_slot(
            project=project, rater=rater, gold=gold, now=now, passed_over=passed_over, after_id=after_id,
            by_priority=by_priority, after_priority=after_priority, lock=True,
        )  # fmt: skip
        if candidate is None and after_id:
            after_id, after_priority = 0, None  # nothing after the rater's last task: look at the ones before it
            continue
        if candidate is None:
            return None
        task_id, required, keep_order = candidate
        # Fresh statements: they see leases and problem reports committed after the candidate query took its
        # snapshot.
        if selectors.task_held_back(task_id=task_id) or (
            not gold and selectors.task_slots_taken(task_id=task_id, now=now) >= required
        ):
            passed_over.append(task_id)
            continue
        shown_order = list(
            TaskResponse.objects.filter(task_id=task_id).order_by("position").values_list("response_id", flat=True)
        )
        if not keep_order:
            random.shuffle(shown_order)  # a new order for each rater, unless the task keeps its stored one
        return Assignment.objects.create(
            task_id=task_id,
            rater=rater,
            leased_at=now,
            expires_at=now + project.lease_timeout,
            shown_order=shown_order,
        )


def _lease_next_in_python(*, project: Project, rater: User, now: datetime, want_gold: bool) -> Assignment | None:
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
        for gold in (want_gold, not want_gold):
            assignment = _lease_first_free_slot(project=project, rater=rater, gold=gold, now=now)
            if assignment is not None:
                return assignment
    return None


def _lease_next_in_postgres(*, project: Project, rater: User, now: datetime, want_gold: bool) -> Assignment | None:
    """The same steps as ``_lease_next_in_python`` (migration 0008), and the task's content for the page, in one
    round trip: the content rides on the assignment as ``content``."""
    content_columns, content_joins = task_content_sql()
    sql = f"""
        WITH lease AS (SELECT * FROM labeling_lease_next(%s, %s, %s, %s, %s))
        SELECT {columns_of(Assignment, "lease")}, {content_columns}
        FROM lease JOIN {ComparisonTask._meta.db_table} t ON t.id = lease.task_id {content_joins}
        ORDER BY s.position
    """  # noqa: S608 (table and column names come from the models, values are parameters)
    with connection.cursor() as cursor:
        # psycopg sends the timedelta as an interval (the stubs list no timedelta among parameter types)
        cursor.execute(sql, [project.pk, rater.pk, want_gold, now, project.lease_timeout])  # type: ignore[list-item]
        rows = cursor.fetchall()
    if not rows:
        return None
    width = len(Assignment._meta.concrete_fields)
    assignment = instance_from_row(Assignment, rows[0][:width])
    assignment.content = selectors.task_content_from_rows([row[width:] for row in rows])
    return assignment


@retry_when_sqlite_is_locked
def assignment_lease_next(*, project: Project, rater: User, now: datetime | None = None) -> Assignment | None:
    """The rater's live lease in this project, or a new lease on a task they have not seen that still has a
    free slot: a gold task first while the rater is within their first ``gold_first_tasks`` tasks on the project,
    then gold tasks mixed in at the project's gold rate. None when nothing is left for them; :class:`RaterPaused`
    when the rater is paused on the project.

    A task with an open problem report is held back: nobody gets a new lease on it, and a live lease on it is
    not handed back either. Leases taken before the report stay valid, so their submissions are accepted."""
    # selectors.project_for_lease reads the rater's pause and first tasks with the project (one query, not three).
    if project.rater_paused is not False:
        quality.rater_refuse_if_paused(project=project, rater=rater)
    if project.rater_held_first is None:
        gold_first = quality.wants_gold_first(project=project, rater=rater)
    else:
        gold_first = project.rater_held_first < project.gold_first_tasks
    want_gold = gold_first or random.random() < project.gold_rate
    lease_next = _lease_next_in_postgres if connection.vendor == "postgresql" else _lease_next_in_python
    for attempt in range(BUSY_RETRIES):
        moment = now or timezone.now()
        assignment = lease_next(project=project, rater=rater, now=moment, want_gold=want_gold)
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
    if (
        lease_ran_out
        and not task.is_gold
        and selectors.task_slots_taken(task_id=task.pk, now=now) >= task.required_judgements
    ):
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
    validate(judgement, constraints=False, exclude=["task", "rater"])
    if task.is_gold and task.gold_ranking:
        judgement.gold_score = gold_score(judgement.ranking, task.gold_ranking)
    if assignment.rater_paused is None:  # else selectors.assignment_of_rater read it with the assignment
        judgement.rater_paused = quality.rater_is_paused(project=project, rater=rater)
    else:
        judgement.rater_paused = assignment.rater_paused
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


@retry_when_sqlite_is_locked
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
        judgement = submit(assignment=assignment, rater=rater, now=now, fields=fields)
    except Conflict as refusal:
        # Most likely a retry of this very submission (perhaps concurrent: it committed while this one
        # waited for the lock).
        if refusal.message == ALREADY_JUDGED and (earlier := stored()) is not None:
            return earlier, False
        raise
    except IntegrityError as error:
        if (earlier := stored()) is not None:
            return earlier, False
        if Judgement.objects.filter(task_id=task_id, rater=rater).exists():
            raise Conflict(ALREADY_JUDGED) from error
        raise ApplicationError(f"The judgement was refused: {error}") from error
    if judgement.gold_score is not None:
        project = assignment.task.project
        if quality.gold_rule_apply(project=project, rater=rater, now=now) is not None:
            project.rater_paused = True  # paused now: the rater's next lease is refused
    return judgement, True


@retry_when_sqlite_is_locked
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


@retry_when_sqlite_is_locked
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
            save_validated(demonstration)
            return demonstration, True
    except IntegrityError:
        if (existing := stored()) is not None:
            return existing, False
        raise
