"""Reads that are more than one ``.get()``: what a rater has left to do, what the admin lists."""

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import orjson
from django.db import connection
from django.db.models import (
    Avg,
    BigIntegerField,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Length

from labeling import live_agreement, rendering
from labeling.models import (
    Assignment,
    ComparisonTask,
    Demonstration,
    Judgement,
    ModelVersion,
    Project,
    Prompt,
    RaterStanding,
    RaterStats,
    ResponseScore,
    ReviewItem,
    RewardCheck,
    TaskProblemReport,
    TaskResponse,
)
from labeling.permissions import is_rater, is_staff, projects_reviewable_by, projects_visible_to
from labeling.quality import wilson_interval
from labeling.raw_sql import columns_of, instance_from_row, task_content_sql

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    from labeling import agreement, audit, leaderboard
    from labeling.models import TrainingRun


class ProjectCounts(TypedDict):
    prompt_count: int
    task_count: int
    open_task_count: int
    judgement_count: int


def _count_per_project(queryset: QuerySet, project_field: str) -> Coalesce:
    """A correlated count of ``queryset`` rows whose ``project_field`` is the outer project."""
    rows = (
        queryset.filter(**{project_field: OuterRef("pk")})
        .order_by()
        .values(project_field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), Value(0))


def open_problem_reports(*, task) -> QuerySet[TaskProblemReport]:
    """The open problem reports of ``task`` (a task, an id or an ``OuterRef`` to one). While a task has one it
    is held back: the lease call hands it to nobody."""
    return TaskProblemReport.objects.filter(task=task, outcome=TaskProblemReport.Outcome.OPEN)


def held_back_sql(task: str) -> str:
    """A plain-SQL condition, true while the task whose id is ``task`` (a column such as ``t.id``) has an open
    problem report. The outcome is a literal, not a parameter, so that the condition matches the partial index
    of open reports in a prepared statement's generic plan too (PostgreSQL) and in SQLite's planner."""
    report, open_ = TaskProblemReport._meta.db_table, TaskProblemReport.Outcome.OPEN.value
    return f"EXISTS (SELECT 1 FROM {report} pr WHERE pr.task_id = {task} AND pr.outcome = '{open_}')"


def task_held_back(*, task_id: int) -> bool:
    """Whether the task has an open problem report, asked in a fresh statement (plain SQL: it runs on every
    lease on SQLite)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {held_back_sql('%s')}", [task_id])
        return bool(cursor.fetchone()[0])


def tasks_left_for_rater(*, user) -> QuerySet[ComparisonTask]:
    """Open tasks the rater has neither judged nor finished with (submitted or skipped), leaving out those held
    back by an open problem report."""
    judged = Judgement.objects.filter(rater=user).values("task_id")
    finished = Assignment.objects.filter(
        rater=user, state__in=[Assignment.State.SUBMITTED, Assignment.State.SKIPPED]
    ).values("task_id")
    return (
        ComparisonTask.objects.filter(status=ComparisonTask.Status.OPEN)
        .exclude(pk__in=judged)
        .exclude(pk__in=finished)
        .exclude(Exists(open_problem_reports(task=OuterRef("pk"))))
    )


def project_list_for_user(*, user) -> QuerySet[Project]:
    """The projects the user may see, each annotated with ``tasks_left`` for this user and
    ``chains_to_review`` (critique chains waiting for review)."""
    from labeling.models import CritiqueChain

    pending = CritiqueChain.objects.filter(review_status=CritiqueChain.ReviewStatus.PENDING)
    return projects_visible_to(user).annotate(
        tasks_left=_count_per_project(tasks_left_for_rater(user=user), "project"),
        chains_to_review=_count_per_project(pending, "project"),
    )


@dataclass
class OwnFigures:
    """What a rater sees of their own work on a project: how much they judged (in all, in the last seven days),
    their gold record once it has enough gold tasks to mean something, and their pause if they are paused."""

    judged: int = 0
    judged_this_week: int = 0
    gold_count: int = 0
    gold_mean: float | None = None
    gold_low: float = 0.0
    gold_high: float = 1.0
    gold_shown: bool = False
    paused_reason: str | None = None


def own_figures(*, user, projects: Sequence[Project], now: datetime) -> dict[int, OwnFigures]:
    """Project id to the user's own figures there, for the projects given: two queries, whatever their number."""
    figures = {project.pk: OwnFigures() for project in projects}
    rows = (
        Judgement.objects.filter(rater=user, task__project__in=list(figures))
        .values("task__project")
        .annotate(
            judged=Count("id"),
            this_week=Count("id", filter=Q(created_at__gte=now - timedelta(days=7))),
            gold_count=Count("gold_score"),
            gold_mean=Avg("gold_score"),
        )
        .order_by()
    )
    enough = {project.pk: max(project.gold_min_count, 5) for project in projects}
    for row in rows:
        own = figures[row["task__project"]]
        own.judged, own.judged_this_week = row["judged"], row["this_week"]
        own.gold_count, own.gold_mean = row["gold_count"], row["gold_mean"]
        own.gold_shown = own.gold_count >= enough[row["task__project"]]
        if own.gold_mean is not None:
            own.gold_low, own.gold_high = wilson_interval(own.gold_mean, own.gold_count)
    paused = RaterStanding.objects.filter(rater=user, project__in=list(figures), paused=True)
    for project_id, reason in paused.values_list("project_id", "reason"):
        figures[project_id].paused_reason = reason
    return figures


def project_list_with_counts() -> "QuerySet[WithAnnotations[Project, ProjectCounts]]":
    """Every project with how many prompts, tasks, open tasks and judgements it holds (for the admin)."""
    return Project.objects.annotate(
        prompt_count=_count_per_project(Prompt.objects.all(), "project"),
        task_count=_count_per_project(ComparisonTask.objects.all(), "project"),
        open_task_count=_count_per_project(ComparisonTask.objects.filter(status=ComparisonTask.Status.OPEN), "project"),
        judgement_count=_count_per_project(Judgement.objects.all(), "task__project"),
    )


def slots_taken_sql(task: str) -> str:
    """The slot rule, written once for every Python path: a task's slots taken are its human judgements (AI
    feedback labels sit beside them) plus its live leases. SQL for the task whose id is ``task`` (a column such as
    ``t.id``), with two parameters: the leased state and now (``slots_taken_params``). The PostgreSQL functions
    in ``labeling/sql/`` apply the same rule. A gold task has no slot limit: every rater may judge it once."""
    assignment, judgement = Assignment._meta.db_table, Judgement._meta.db_table
    human = Judgement.Source.HUMAN.value
    return (
        f"((SELECT COUNT(*) FROM {judgement} j WHERE j.task_id = {task} AND j.source = '{human}')"
        f" + (SELECT COUNT(*) FROM {assignment} a WHERE a.task_id = {task} AND a.state = %s AND a.expires_at > %s))"
    )


def slots_taken_params(now: datetime) -> list:
    return [Assignment.State.LEASED.value, now]


def tasks_with_free_slots(*, project: Project, rater, now: datetime) -> QuerySet[ComparisonTask]:
    """Open tasks of the project that the rater has never held or judged, that no open problem report holds
    back, and whose judgements plus live leases are still fewer than the judgements it needs (any gold task
    the rater has not done)."""
    return (
        ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN)
        .exclude(Exists(Assignment.objects.filter(task=OuterRef("pk"), rater=rater)))
        .exclude(Exists(Judgement.objects.filter(task=OuterRef("pk"), rater=rater)))
        .exclude(Exists(open_problem_reports(task=OuterRef("pk"))))
        .alias(
            slots_taken=RawSQL(
                slots_taken_sql(f"{ComparisonTask._meta.db_table}.id"), slots_taken_params(now), IntegerField()
            )
        )
        .filter(Q(is_gold=True) | Q(slots_taken__lt=F("required_judgements")))
    )


def task_id_with_free_slot(
    *,
    project: Project,
    rater,
    gold: bool,
    now: datetime,
    passed_over: Sequence[int] = (),
    after_id: int = 0,
    by_priority: bool = False,
    after_priority: float | None = None,
    lock: bool = False,
) -> tuple[int, int, bool] | None:
    """``(id, required_judgements, keep_order)`` of the first task (by id, above ``after_id``; or
    ``by_priority``: lowest priority first, unscored tasks last, then by id, or only the scored ones after
    ``(after_priority, after_id)`` where that is given) that ``tasks_with_free_slots`` would list (so none held
    back by an open problem report), with ``is_gold`` as asked.

    Written in SQL because it runs on every "next task" and the ORM takes longer to compile it than the
    database takes to run it. With ``lock`` (PostgreSQL) the row is locked FOR UPDATE, and rows other raters
    hold locked are skipped rather than waited for.
    """
    task, assignment, judgement = (model._meta.db_table for model in (ComparisonTask, Assignment, Judgement))
    passed = ""
    if passed_over:
        passed = f"AND t.id NOT IN ({', '.join(['%s'] * len(passed_over))})"
    locking = "FOR UPDATE OF t SKIP LOCKED" if lock and connection.features.has_select_for_update_skip_locked else ""
    if by_priority and after_priority is not None:
        start, start_params = "(t.priority > %s OR (t.priority = %s AND t.id > %s))", [after_priority] * 2 + [after_id]
    else:
        start, start_params = "t.id > %s", [0 if by_priority else after_id]
    sql = f"""
        SELECT t.id, t.required_judgements, t.keep_order FROM {task} t
        WHERE t.project_id = %s AND t.status = %s AND t.is_gold = %s AND {start} {passed}
          AND NOT EXISTS (SELECT 1 FROM {assignment} a WHERE a.task_id = t.id AND a.rater_id = %s)
          AND NOT EXISTS (SELECT 1 FROM {judgement} j WHERE j.task_id = t.id AND j.rater_id = %s)
          AND NOT {held_back_sql("t.id")}
          AND (t.is_gold OR {slots_taken_sql("t.id")} < t.required_judgements)
        ORDER BY {"t.priority IS NULL, t.priority, " if by_priority else ""}t.id
        LIMIT 1
        {locking}
    """  # noqa: S608 (table names come from the models, values are parameters)
    params = [project.pk, ComparisonTask.Status.OPEN, gold, *start_params, *passed_over, rater.pk, rater.pk]
    params += slots_taken_params(now)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return (row[0], row[1], bool(row[2])) if row else None


def rater_last_task_id(*, project: Project, rater, gold: bool) -> int:
    """The highest task id (gold or not, as asked) the rater ever held in the project; 0 if none.

    Raters take tasks in id order, so the tasks below this id are mostly ones they already did: the search
    for their next task starts above it and looks below only when nothing is left above.
    """
    last = (
        Assignment.objects.filter(rater=rater, task__project=project, task__is_gold=gold)
        .order_by("-task_id")
        .values_list("task_id", flat=True)
        .first()
    )
    return last or 0


def rater_priority_cursor(*, project: Project, rater, gold: bool) -> tuple[float, int] | None:
    """``(priority, id)`` of the task (gold or not, as asked) the rater leased last in the project since its
    priorities were written; None if there is none, or it has no priority (unscored tasks come last).

    Raters take tasks in priority order, so the tasks before it are mostly ones they already did: the search for
    their next task goes on after it and looks before it only when nothing is left after it. A refresh of the
    priorities sends every rater back to the top."""
    leases = Assignment.objects.filter(rater=rater, task__project=project, task__is_gold=gold)
    # Read now, not from ``project``: a refresh may have come after it was loaded.
    refreshed_at = Project.objects.filter(pk=project.pk).values_list("priorities_refreshed_at", flat=True).first()
    if refreshed_at is not None:
        leases = leases.filter(leased_at__gte=refreshed_at)
    last = leases.order_by("-leased_at").values_list("task__priority", "task_id").first()
    return (last[0], last[1]) if last and last[0] is not None else None


def task_slots_taken(*, task_id: int, now: datetime) -> int:
    """Judgements plus live leases on the task, counted now (one statement, so one snapshot)."""
    with connection.cursor() as cursor:
        # The task's id is a parameter, once in each count.
        cursor.execute(f"SELECT {slots_taken_sql('%s')}", [task_id, task_id, *slots_taken_params(now)])
        return cursor.fetchone()[0]


def prompt_next_for_demonstration(*, project: Project, author, exclude: Sequence[int] = ()) -> Prompt | None:
    """A prompt of the project the author has not written a demonstration for (nor passed over, ``exclude``),
    fewest demonstrations first."""
    demonstrations = (
        Demonstration.objects.filter(prompt=OuterRef("pk"))
        .order_by()
        .values("prompt")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Prompt.objects.filter(project=project)
        .exclude(pk__in=list(exclude))
        .exclude(Exists(Demonstration.objects.filter(prompt=OuterRef("pk"), author=author)))
        .annotate(demonstration_count=Coalesce(Subquery(demonstrations, output_field=IntegerField()), Value(0)))
        .order_by("demonstration_count", "id")
        .first()
    )


@dataclass(frozen=True)
class TaskContent:
    messages: list[dict]
    texts: dict[int, str]  # response id -> text, in the task's stored order
    # Safe HTML of each turn and of each response (``task_content`` only).
    messages_html: list[str] = field(default_factory=list)
    html: dict[int, str] = field(default_factory=dict)

    @cached_property
    def response_ids(self) -> list[int]:
        return list(self.texts)

    @cached_property
    def keys(self) -> list[str]:
        """The response ids as the keys of ``likert`` and ``flags``."""
        return [str(response_id) for response_id in self.texts]

    @cached_property
    def position(self) -> dict[int, int]:
        return {response_id: index for index, response_id in enumerate(self.texts)}


def task_content(*, task_id: int) -> TaskContent:
    """The prompt and the response texts of a task, with their safe HTML, in one query (plain SQL: it runs on
    every "next task", and the ORM takes longer to compile it than the database takes to run it)."""
    columns, joins = task_content_sql()
    sql = f"""
        SELECT {columns} FROM {ComparisonTask._meta.db_table} t {joins} WHERE t.id = %s ORDER BY s.position
    """  # noqa: S608 (table names come from the models, values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, [task_id])
        rows = cursor.fetchall()
    return task_content_from_rows(rows)


def task_content_from_rows(rows: Sequence[tuple]) -> TaskContent:
    """A ``TaskContent`` from the rows that ``task_content_sql`` selects."""
    messages: Any = rows[0][3] if rows else []  # JSON: a list, or text on SQLite
    messages_html: Any = rows[0][4] if rows else []
    rows = [row for row in rows if row[0] is not None]  # a task without responses still has its prompt
    if isinstance(messages, str):  # SQLite hands JSON back as text
        messages, messages_html = json.loads(messages), json.loads(messages_html)
    if len(messages_html) != len(messages):
        messages_html = [None] * len(messages)
    return TaskContent(
        messages=messages,
        texts={row[0]: row[1] for row in rows},
        messages_html=[
            rendering.html_from_storage(str(turn.get("content", "")), stored)
            for turn, stored in zip(messages, messages_html, strict=True)
        ],
        html={row[0]: rendering.html_from_storage(row[1], row[2]) for row in rows},
    )


def task_contents(*, task_ids: list[int]) -> dict[int, TaskContent]:
    """The prompt and response texts of many tasks, in one query."""
    rows = (
        TaskResponse.objects.filter(task_id__in=task_ids)
        .order_by("task_id", "position")
        .annotate(messages_text=Cast("task__prompt__messages", TextField()))
        .values_list("task_id", "response_id", "response__text", "messages_text")
    )
    contents: dict[int, TaskContent] = {}
    for task_id, response_id, text, messages in rows:
        content = contents.get(task_id)
        if content is None:
            content = contents[task_id] = TaskContent(messages=orjson.loads(messages), texts={})
        content.texts[response_id] = text
    return contents


WHICH = ("include", "exclude", "only")  # what an export does with a kind of row (gold, paused raters', eval prompts')


@dataclass(frozen=True)
class ExportFilter:
    """Which judgements (or demonstrations, or prompts) an export takes. ``gold`` (judgements on gold tasks),
    ``paused`` (judgements by raters paused on the project) and ``eval`` (eval prompts, with their judgements
    and demonstrations): "include", "exclude" or "only" (``WHICH``). Eval prompts are held out by default."""

    project_id: int
    since: datetime | None = None
    until: datetime | None = None
    raters: tuple[str, ...] = ()
    source: str | None = None
    gold: str = "include"
    paused: str = "exclude"
    eval: str = "exclude"

    @classmethod
    def for_project(cls, project: Project, *, raters=(), source: str | None = None, **fields) -> "ExportFilter":
        """The filter of an export form or query: ``raters`` as usernames, ``source`` blank for both sources, and
        ``since``, ``until``, ``gold``, ``paused``, ``eval`` as given (missing or None: their defaults)."""
        given = {name: value for name, value in fields.items() if value is not None}
        return cls(project_id=project.pk, raters=tuple(raters), source=source or None, **given)

    def as_dict(self) -> dict:
        return {
            "project_id": self.project_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "raters": list(self.raters),
            "source": self.source,
            "gold": self.gold,
            "paused": self.paused,
            "eval": self.eval,
        }


def _which(rows: QuerySet, choice: str, field: str) -> QuerySet:
    """``rows`` whose boolean ``field`` holds, all of them, or those where it does not (``WHICH``)."""
    if choice == "exclude":
        return rows.filter(**{field: False})
    if choice == "only":
        return rows.filter(**{field: True})
    return rows


def _within(rows: QuerySet, selection: ExportFilter, person: str) -> QuerySet:
    """The rows made in the filter's time range by the filter's people (``person``: the field naming them)."""
    if selection.since:
        rows = rows.filter(created_at__gte=selection.since)
    if selection.until:
        rows = rows.filter(created_at__lt=selection.until)
    if selection.raters:
        rows = rows.filter(**{f"{person}__username__in": selection.raters})
    return rows


def judgements_for_export(*, selection: ExportFilter, fields: tuple[str, ...] = ("id",)) -> QuerySet:
    """The selected judgements as tuples of ``fields``, ordered by task so that an exporter reading them
    with a server-side cursor needs each task's text once."""
    judgements = _within(Judgement.objects.filter(task__project_id=selection.project_id), selection, "rater")
    if selection.source:
        judgements = judgements.filter(source=selection.source)
    judgements = _which(judgements, selection.gold, "task__is_gold")
    judgements = _which(judgements, selection.paused, "rater_paused")
    judgements = _which(judgements, selection.eval, "task__prompt__is_eval")
    # The JSON columns as text: exporters decode them with orjson (and skip the empty ones), several times
    # faster than the ORM's json.loads on a million rows.
    judgements = judgements.annotate(
        ranking_text=Cast("ranking", TextField()),
        likert_text=Cast("likert", TextField()),
        flags_text=Cast("flags", TextField()),
    )
    return judgements.order_by("task_id", "id").values_list(*fields)


def demonstrations_for_export(*, selection: ExportFilter) -> QuerySet:
    """The selected demonstrations as ``(id, prompt messages, text, author, origin, created_at)``."""
    demonstrations = _within(Demonstration.objects.filter(prompt__project_id=selection.project_id), selection, "author")
    demonstrations = _which(demonstrations, selection.eval, "prompt__is_eval")
    return demonstrations.order_by("id").values_list(
        "id", "prompt__messages", "text", "author__username", "origin", "created_at"
    )


def prompts_for_export(*, selection: ExportFilter) -> QuerySet:
    """The project's prompts (made in the filter's time range) as ``(id, messages)``, oldest first."""
    prompts = _which(Prompt.objects.filter(project_id=selection.project_id), selection.eval, "is_eval")
    if selection.since:
        prompts = prompts.filter(created_at__gte=selection.since)
    if selection.until:
        prompts = prompts.filter(created_at__lt=selection.until)
    return prompts.order_by("id").values_list("id", "messages")


def ai_human_agreement(*, project: Project) -> dict:
    """Where people and the AI labeller judged the same pair (a task with two responses): how often the AI's
    preferred response is the one the person put first, per principle and overall. Ties and "both bad" are
    left out. Each (AI label, human judgement) pair counts once."""
    human: dict[int, list[int]] = {}
    for task_id, ranking in Judgement.objects.filter(
        task__project=project, source=Judgement.Source.HUMAN, all_bad=False
    ).values_list("task_id", "ranking"):
        if ranking and len(ranking) == 2 and len(ranking[0]) == 1:
            human.setdefault(task_id, []).append(ranking[0][0])
    rows: dict[str, list[int]] = {}
    for task_id, ranking, principle in Judgement.objects.filter(
        task__project=project, source=Judgement.Source.AI, task_id__in=list(human)
    ).values_list("task_id", "ranking", "principle__name"):
        if not ranking or len(ranking[0]) != 1:
            continue
        counts = rows.setdefault(principle or "(no principle)", [0, 0])
        for winner in human[task_id]:
            counts[0] += int(winner == ranking[0][0])
            counts[1] += 1
    by_principle = [
        {"principle": name, "pairs": total, "agreement": agreed / total}
        for name, (agreed, total) in sorted(rows.items())
        if total
    ]
    agreed = sum(agreed for agreed, _ in rows.values())
    pairs = sum(total for _, total in rows.values())
    return {"pairs": pairs, "agreement": agreed / pairs if pairs else None, "by_principle": by_principle}


def critique_chain_next_for_review(*, project: Project, exclude: Sequence[int] = ()):
    """The oldest chain of the project waiting for review, leaving out those passed over."""
    from labeling.models import CritiqueChain

    chains = CritiqueChain.objects.filter(project=project, review_status=CritiqueChain.ReviewStatus.PENDING)
    return chains.exclude(pk__in=list(exclude)).select_related("prompt").order_by("created_at", "id").first()


def project_for_labelling(*, user, slug: str) -> Project | None:
    """The project with this slug if the user may label it: staff any, a rater their own (plain SQL for
    raters, who ask on every "next task")."""
    if is_staff(user):
        return Project.objects.filter(slug=slug).first()
    if not is_rater(user):
        return None
    members = Project.members.through._meta.db_table
    sql = f"""
        SELECT p.* FROM {Project._meta.db_table} p JOIN {members} m ON m.project_id = p.id
        WHERE p.slug = %s AND m.user_id = %s
    """  # noqa: S608 (table names come from the models, values are parameters)
    return next(iter(Project.objects.raw(sql, [slug, user.pk])), None)


def project_for_lease(*, user, slug: str) -> Project | None:
    """``project_for_labelling`` for the "next task" call: a rater's project comes with, in the same query,
    ``rater_paused`` (whether the rater is paused on it) and ``rater_held_first`` (how many tasks they have held
    there, counted up to ``gold_first_tasks``), which the lease would otherwise ask for in two more queries."""
    if is_staff(user) or not is_rater(user):
        return project_for_labelling(user=user, slug=slug)
    with connection.cursor() as cursor:
        cursor.execute(_project_for_lease_sql(connection.vendor), [slug, user.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    project = instance_from_row(Project, row[:-2])
    project.rater_paused, project.rater_held_first = bool(row[-2]), row[-1]
    return project


def project_for_lease_after(*, user, project: Project) -> Project | None:
    """``project_for_lease`` for the lease that follows a submission on a task of ``project``: the project read with
    the assignment (``assignment_of_rater``) already carries the rater's standing and membership, so no query is
    made; any other project is read again."""
    if project.rater_is_member is None or is_staff(user) or not is_rater(user):
        return project_for_lease(user=user, slug=project.slug)
    return project if project.rater_is_member else None


def _held_first_sql(vendor: str, rater: str, project: str) -> str:
    """How many tasks the rater (an SQL expression) has held in the project (an alias), counted up to its
    ``gold_first_tasks``. A LIMIT that reads a column is PostgreSQL's; elsewhere NULL, and the lease counts in a
    query of its own."""
    if vendor != "postgresql":
        return "NULL"
    assignment, task = (model._meta.db_table for model in (Assignment, ComparisonTask))
    return f"""(SELECT COUNT(*) FROM (
            SELECT 1 FROM {assignment} held_a JOIN {task} held_t ON held_t.id = held_a.task_id
            WHERE held_a.rater_id = {rater} AND held_t.project_id = {project}.id LIMIT {project}.gold_first_tasks
        ) held)"""


@cache
def _project_for_lease_sql(vendor: str) -> str:
    members = Project.members.through._meta.db_table
    standing = RaterStanding._meta.db_table
    held_first = _held_first_sql(vendor, "m.user_id", "p")
    return f"""
        SELECT {columns_of(Project, "p")},
            EXISTS (SELECT 1 FROM {standing} rs WHERE rs.project_id = p.id AND rs.rater_id = m.user_id AND rs.paused)
                AS rater_paused,
            {held_first} AS rater_held_first
        FROM {Project._meta.db_table} p JOIN {members} m ON m.project_id = p.id
        WHERE p.slug = %s AND m.user_id = %s
    """  # noqa: S608 (table names come from the models, values are parameters)


def assignment_of_rater(*, task_id: int, rater_id: int) -> Assignment | None:
    """The rater's assignment on a task, with its task and the task's project loaded, in one query (plain SQL: it
    runs on every submission, and the ORM takes longer to compile the join than the database to run it).

    The assignment carries ``rater_paused`` (whether the rater is paused on the project); the project carries
    what ``project_for_lease`` reads for the next lease (``rater_paused``, ``rater_held_first``) and
    ``rater_is_member``, so that a submission can lease the rater's next task without asking for the project
    again."""
    with connection.cursor() as cursor:
        cursor.execute(_assignment_of_rater_sql(connection.vendor), [task_id, rater_id])
        row = cursor.fetchone()
    if row is None:
        return None
    widths = [len(Assignment._meta.concrete_fields), len(ComparisonTask._meta.concrete_fields)]
    lease = instance_from_row(Assignment, row[: widths[0]])
    lease.task = instance_from_row(ComparisonTask, row[widths[0] : widths[0] + widths[1]])
    project = lease.task.project = instance_from_row(Project, row[widths[0] + widths[1] : -3])
    lease.rater_paused = project.rater_paused = bool(row[-3])
    project.rater_is_member, project.rater_held_first = bool(row[-2]), row[-1]
    return lease


@cache
def _assignment_of_rater_sql(vendor: str) -> str:
    columns = ", ".join(columns_of(model) for model in (Assignment, ComparisonTask, Project))
    assignment, task, project, standing, members = (
        model._meta.db_table for model in (Assignment, ComparisonTask, Project, RaterStanding, Project.members.through)
    )
    return f"""
        SELECT {columns}, EXISTS (
            SELECT 1 FROM {standing} rs
            WHERE rs.project_id = {task}.project_id AND rs.rater_id = {assignment}.rater_id AND rs.paused
        ), EXISTS (
            SELECT 1 FROM {members} m WHERE m.project_id = {project}.id AND m.user_id = {assignment}.rater_id
        ), {_held_first_sql(vendor, f"{assignment}.rater_id", project)}
        FROM {assignment}
        JOIN {task} ON {task}.id = {assignment}.task_id
        JOIN {project} ON {project}.id = {task}.project_id
        WHERE {assignment}.task_id = %s AND {assignment}.rater_id = %s
    """  # noqa: S608 (table and column names come from the models, values are parameters)


AUDIT_CHUNK = 10_000
WEEK_SECONDS = 7 * 24 * 3600
# Weeks start on Monday: 1970-01-01 was a Thursday, so week n starts 3 days before 1970-01-01 plus n weeks.
WEEK_SHIFT_SECONDS = 3 * 24 * 3600
FIRST_MONDAY = date(1969, 12, 29)


def week_of(moment: datetime) -> int:
    """The number of the (Monday to Sunday, UTC) week holding ``moment``: what the audit's series count by."""
    return int((moment.timestamp() + WEEK_SHIFT_SECONDS) // WEEK_SECONDS)


def week_start(week: int) -> date:
    """The Monday that starts week number ``week``."""
    return FIRST_MONDAY + timedelta(weeks=week)


def _as_ints(values: Sequence) -> np.ndarray:
    """Database integers, None as -1."""
    array = np.array(values, dtype=np.float64)
    return np.where(np.isnan(array), -1, array).astype(np.int64)


def _int_rows(rows: QuerySet, width: int) -> np.ndarray:
    """A query's integer rows as an array of ``width`` columns, read a chunk at a time (no list of tuples)."""
    values = itertools.chain.from_iterable(rows.iterator(chunk_size=AUDIT_CHUNK))
    return np.fromiter(values, dtype=np.int64).reshape(-1, width)


def judgement_columns(*, project: Project) -> "audit.JudgementColumns":
    """Every human judgement of the project that has a rater, as the audit's arrays. The database reads the
    rankings' first places, the task's texts' lengths and so on; Python only moves columns into numpy, a chunk of
    rows at a time, so memory stays near the arrays' own size."""
    from labeling import audit  # numpy and scipy's statistics: loaded by the jobs that audit, not by every page

    slots = (
        TaskResponse.objects.filter(task__project=project)
        .annotate(length=Length("response__text"))
        .order_by("task_id", "response_id")
        .values_list("task_id", "response_id", "length")
    )
    slot_rows = _int_rows(slots, 3)
    task_ids, first_slot, slot_counts = np.unique(slot_rows[:, 0], return_index=True, return_counts=True)
    lengths = np.add.reduceat(slot_rows[:, 2], first_slot) if len(slot_rows) else np.zeros(0, np.int64)
    # The longer response of each two-response task (-1 when they are as long or the task has more).
    longer = np.full(len(task_ids), -1, dtype=np.int64)
    pairs = slot_counts == 2
    a, b = first_slot[pairs], first_slot[pairs] + 1
    length_a, length_b = slot_rows[a, 2], slot_rows[b, 2]
    longer[pairs] = np.where(length_a > length_b, slot_rows[a, 1], np.where(length_b > length_a, slot_rows[b, 1], -1))
    prompts = (
        ComparisonTask.objects.filter(project=project)
        .annotate(length=Length(Cast("prompt__messages", TextField())))
        .order_by("id")
        .values_list("id", "length")
    )
    prompt_rows = _int_rows(prompts, 2)
    chars = lengths.astype(np.float64)
    chars += prompt_rows[np.searchsorted(prompt_rows[:, 0], task_ids), 1] if len(task_ids) else 0

    judgements = (
        Judgement.objects.filter(task__project=project, source=Judgement.Source.HUMAN, rater__isnull=False)
        .annotate(
            winner=Cast(KT("ranking__0__0"), BigIntegerField()),
            tied=Cast(KT("ranking__0__1"), BigIntegerField()),
            runner=Cast(KT("ranking__1__0"), BigIntegerField()),
            beyond=Cast(KT("ranking__2__0"), BigIntegerField()),
            first_shown=Cast(KT("shown_order__0"), BigIntegerField()),
            third_shown=Cast(KT("shown_order__2"), BigIntegerField()),
        )
        .order_by()
        .values_list(
            "rater_id", "task_id", "winner", "tied", "runner", "beyond", "first_shown", "third_shown", "all_bad",
            "seconds_spent", "gold_score", "created_at",
        )
    )  # fmt: skip
    parts = []
    rows = judgements.iterator(chunk_size=AUDIT_CHUNK)
    while chunk := list(itertools.islice(rows, AUDIT_CHUNK)):
        columns = zip(*chunk, strict=True)
        rater, task, winner, tied, runner, beyond, first, third, all_bad, seconds, gold, created = columns
        task_array = np.array(task, dtype=np.int64)
        winner_array, tied_array = _as_ints(winner), _as_ints(tied)
        runner_array, beyond_array, third_array = _as_ints(runner), _as_ints(beyond), _as_ints(third)
        bad = np.array(all_bad, dtype=bool)
        strict = (winner_array >= 0) & (runner_array >= 0) & (tied_array < 0) & (beyond_array < 0) & (third_array < 0)
        where = np.clip(np.searchsorted(task_ids, task_array), 0, max(len(task_ids) - 1, 0))
        parts.append(
            audit.JudgementColumns(
                rater=np.array(rater, dtype=np.int64),
                task=task_array,
                winner=np.where(strict & ~bad, winner_array, -1),
                first_shown=_as_ints(first),
                longer=longer[where] if len(task_ids) else np.full(len(task_array), -1),
                tie=tied_array >= 0,
                all_bad=bad,
                seconds=np.array(seconds, dtype=np.float64),
                chars=chars[where] if len(task_ids) else np.zeros(len(task_array)),
                gold=np.array(gold, dtype=np.float64),
                week=np.array([week_of(moment) for moment in created], dtype=np.int64),
            )
        )
    return audit.JudgementColumns.concatenate(parts)


DASHBOARD_SORTS = {
    "rater": "rater__username", "judgements": "judgements", "gold": "gold_mean", "position": "position_share",
    "length": "length_share", "seconds": "median_seconds", "fast": "fast_share", "ties": "tie_rate",
    "all_bad": "all_bad_rate", "pairwise": "pairwise_agreement", "consensus": "consensus_agreement",
    "flags": "flag_count", "alpha": "alpha", "tau": "kendall_tau_b", "reward": "reward_agreement",
}  # fmt: skip


def rater_dashboard(*, project: Project, flagged: bool = False, paused: bool = False, search: str = "", sort: str = ""):
    """The project's audited raters for the dashboard, read from the audit's table alone: each row with the
    rater and whether they are paused (``is_paused``, ``pause_reason``). ``sort`` names a column of
    ``DASHBOARD_SORTS``, "-" first for descending (default: most flags first)."""
    rows = RaterStats.objects.filter(project=project).select_related("rater")
    standing = RaterStanding.objects.filter(project=project, rater=OuterRef("rater"), paused=True)
    rows = rows.annotate(is_paused=Exists(standing), pause_reason=Subquery(standing.values("reason")[:1]))
    if flagged:
        rows = rows.filter(flag_count__gt=0)
    if paused:
        rows = rows.filter(is_paused=True)
    if search:
        rows = rows.filter(rater__username__icontains=search)
    descending = sort.startswith("-")
    column = DASHBOARD_SORTS.get(sort.lstrip("-"))
    if column is None:
        return rows.order_by("-flag_count", "rater__username")
    ordering = F(column).desc(nulls_last=True) if descending else F(column).asc(nulls_last=True)
    return rows.order_by(ordering, "rater__username")


# The places of human rankings with a rater, by the database's own JSON functions: ``{places}`` expands every
# judgement of the project into one row per response, g.place its group (0 = best), r.response the response.
PLACES_FROM = {
    "postgresql": """
        FROM labeling_judgement j
        JOIN labeling_comparisontask t ON t.id = j.task_id
        CROSS JOIN LATERAL jsonb_array_elements(j.ranking) WITH ORDINALITY AS g(value, ordinality)
        CROSS JOIN LATERAL jsonb_array_elements_text(g.value) AS r(value)
        WHERE t.project_id = %s AND j.source = 'human' AND j.rater_id IS NOT NULL
    """,
    "sqlite": """
        FROM labeling_judgement j
        JOIN labeling_comparisontask t ON t.id = j.task_id, json_each(j.ranking) AS g, json_each(g.value) AS r
        WHERE t.project_id = %s AND j.source = 'human' AND j.rater_id IS NOT NULL
    """,
}
PLACE_COLUMNS = {
    "postgresql": (
        "(r.value)::bigint",
        "(g.ordinality - 1)",
        "floor((extract(epoch FROM j.created_at) + 259200) / 604800)",
    ),
    "sqlite": (
        "CAST(r.value AS INTEGER)",
        "CAST(g.key AS INTEGER)",
        "(CAST(strftime('%%s', j.created_at) AS INTEGER) + 259200) / 604800",
    ),
}
WIDE = "(SELECT COUNT(*) FROM labeling_taskresponse s WHERE s.task_id = j.task_id) >= 3"


def _int_columns(sql: str, params: list, types: Sequence[type]) -> list[np.ndarray]:
    """A query's integer rows as one array per column, read a chunk at a time (no list of every row)."""
    parts: list[list[np.ndarray]] = [[] for _ in types]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(AUDIT_CHUNK * 2):
            table = np.array(rows, dtype=np.int64).reshape(-1, len(types))
            for index, kind in enumerate(types):
                parts[index].append(table[:, index].astype(kind))
    columns = []
    for index, kind in enumerate(types):  # one column at a time: its chunks go as it is joined
        columns.append(np.concatenate(parts[index]) if parts[index] else np.zeros(0, kind))
        parts[index] = []
    return columns


def agreement_inputs(*, project: Project, rater: np.ndarray, task: np.ndarray, week: np.ndarray) -> "agreement.Inputs":
    """The agreement figures' inputs (labeling.agreement.Inputs): the database counts each response's places
    over the judgements, and lists the places of each judgement only on tasks of three or more responses;
    ``rater``, ``task`` and ``week`` (one per judgement) come from ``judgement_columns``."""
    from labeling import agreement  # scipy: loaded by the jobs that audit, not by every page

    response, place, when = PLACE_COLUMNS[connection.vendor]
    source = PLACES_FROM[connection.vendor]
    units = _int_columns(
        f"SELECT j.task_id, {response}, {place}, COUNT(*) {source} GROUP BY j.task_id, {response}, {place}",
        [project.pk],
        (np.int64, np.int64, np.int64, np.int64),
    )
    wide = _int_columns(
        f"SELECT j.id, j.rater_id, j.task_id, {response}, {place}, {when} {source} AND {WIDE}",
        [project.pk],
        (np.int64, np.int64, np.int64, np.int64, np.int8, np.int64),
    )
    return agreement.Inputs(
        units=np.column_stack(units), rater=rater, task=task, week=week, wide=agreement.Places(*wide)
    )


def rater_weights(*, project_id: int) -> dict[str, float]:
    """Username to trust weight, for the raters the project's last audit weighed."""
    rows = RaterStats.objects.filter(project_id=project_id).values_list("rater__username", "weight")
    return dict(rows)


def review_next(*, project: Project, reviewer) -> ReviewItem | None:
    """The oldest open review of the project, leaving out tasks the reviewer judged themselves."""
    items = ReviewItem.objects.filter(task__project=project, status=ReviewItem.Status.OPEN)
    items = items.exclude(task__judgements__rater=reviewer)
    return items.select_related("task").order_by("created_at", "id").first()


def review_judgements(*, task_id: int) -> list[dict]:
    """A task's human judgements for its reviewer, the raters unnamed: "rater 1", "rater 2", ... in the order
    they judged."""
    rows = (
        Judgement.objects.filter(task_id=task_id, source=Judgement.Source.HUMAN)
        .order_by("id")
        .values_list("ranking", "margin", "all_bad", "rationale", "flags")
    )
    return [
        {"rater": f"rater {number}", "ranking": ranking, "margin": margin, "all_bad": all_bad,
         "rationale": rationale, "flags": flags}
        for number, (ranking, margin, all_bad, rationale, flags) in enumerate(rows, start=1)
    ]  # fmt: skip


def adjudicated_rankings(*, project_id: int) -> dict[int, list[list[int]]]:
    """Task id to the final ranking a reviewer recorded, for the project's decided reviews."""
    decided = ReviewItem.objects.filter(task__project_id=project_id, status=ReviewItem.Status.DECIDED)
    return {task_id: ranking for task_id, ranking in decided.values_list("task_id", "ranking") if ranking}


def open_reviews_by_project(*, user) -> dict[int, int]:
    """Project id to its open reviews that ``user`` may settle (not on tasks they judged)."""
    items = ReviewItem.objects.filter(
        status=ReviewItem.Status.OPEN, task__project__in=projects_reviewable_by(user)
    ).exclude(task__judgements__rater=user)
    return dict(items.values("task__project").annotate(n=Count("id")).values_list("task__project", "n"))


def reward_agreement(*, project: Project) -> dict[int, tuple[float, int]]:
    """Rater id to (pairs agreed, pairs) over their judgements the project's current reward model held out."""
    current = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, is_current=True).first()
    if current is None:
        return {}
    rows = (
        RewardCheck.objects.filter(model_version=current, judgement__rater__isnull=False)
        .values("judgement__rater")
        .annotate(agreed=Sum("agreed"), pairs=Sum("pairs"))
        .values_list("judgement__rater", "agreed", "pairs")
    )
    return {rater: (float(agreed), int(pairs)) for rater, agreed, pairs in rows}


JUDGES = ("human", "ai", "reward")  # who judges a leaderboard's comparisons: raters, the AI labeller, the reward model


@dataclass(frozen=True)
class VersionPair:
    """Two answers of different origins that one judgement ordered: ``score`` 1 when ``a`` came first."""

    judgement_id: int
    a: int  # response ids
    b: int
    origin_a: str
    origin_b: str
    length_a: int
    length_b: int
    score: float


def version_pairs(*, project: Project, source: str = "human", eval_only: bool = False):
    """Every pair of answers of two different origins (model versions, imported models, people) that one of the
    project's judgements from ``source`` ordered (raters paused on the project left out), on eval prompts only
    when ``eval_only``. Only tasks that mix origins are read."""
    slots = TaskResponse.objects.filter(task__project=project)
    if eval_only:
        slots = slots.filter(task__prompt__is_eval=True)
    mixed = (
        slots.values("task_id").annotate(origins=Count("response__origin", distinct=True)).filter(origins__gt=1)
    ).values("task_id")
    answers: dict[int, dict[int, tuple[str, int]]] = {}
    rows = slots.filter(task_id__in=Subquery(mixed)).annotate(length=Length("response__text"))
    for task_id, response_id, origin, length in rows.values_list(
        "task_id", "response_id", "response__origin", "length"
    ):
        answers.setdefault(task_id, {})[response_id] = (origin, length)
    judgements = Judgement.objects.filter(task_id__in=Subquery(mixed), source=source)
    if source == Judgement.Source.HUMAN:
        judgements = judgements.filter(rater_paused=False)
    ranked = judgements.annotate(ranking_text=Cast("ranking", TextField())).values_list("id", "task_id", "ranking_text")
    for judgement_id, task_id, ranking_text in ranked.iterator(chunk_size=2000):
        task_answers = answers.get(task_id, {})
        place = {response_id: tier for tier, group in enumerate(orjson.loads(ranking_text)) for response_id in group}
        for first, second in itertools.combinations(sorted(place), 2):
            if first not in task_answers or second not in task_answers:
                continue
            (origin_a, length_a), (origin_b, length_b) = task_answers[first], task_answers[second]
            if origin_a != origin_b:
                score = 0.5 if place[first] == place[second] else float(place[first] < place[second])
                yield VersionPair(judgement_id, first, second, origin_a, origin_b, length_a, length_b, score)


def current_reward_scores(*, project: Project, response_ids) -> tuple[ModelVersion | None, dict[int, float]]:
    """The project's current reward model and its stored scores of ``response_ids``."""
    current = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, is_current=True).first()
    if current is None:
        return None, {}
    scores = ResponseScore.objects.filter(model_version=current, response_id__in=list(response_ids))
    return current, dict(scores.values_list("response_id", "score"))


@dataclass
class JudgedComparisons:
    comparisons: "leaderboard.Comparisons"
    # The reward model as judge: the version, and the human comparisons it could not judge (no stored score).
    reward_model: ModelVersion | None = None
    unscored: int = 0
    # Its agreement with the raters on the comparisons both decided: (agreed, compared).
    agreement: tuple[int, int] = (0, 0)
    # The mean length in characters of each origin's compared answers (each answer once).
    lengths: dict[str, float] = field(default_factory=dict)


def version_comparisons(*, project: Project, judge: str = "human", eval_only: bool = False) -> JudgedComparisons:
    """The comparisons a leaderboard counts, as ``judge`` (``JUDGES``) decides them: raters' judgements, the AI
    labeller's, or the current reward model's verdict (higher stored score wins, equal scores tie) on each pair
    raters compared."""
    from labeling import leaderboard

    source = Judgement.Source.AI if judge == "ai" else Judgement.Source.HUMAN
    pairs = list(version_pairs(project=project, source=source, eval_only=eval_only))
    result = JudgedComparisons(comparisons=leaderboard.Comparisons.from_rows([], []))
    if judge == "reward":
        result.reward_model, scores = current_reward_scores(
            project=project, response_ids={pair.a for pair in pairs} | {pair.b for pair in pairs}
        )
        judged = [pair for pair in pairs if pair.a in scores and pair.b in scores]
        result.unscored = len(pairs) - len(judged)
        verdicts = [
            0.5 if scores[pair.a] == scores[pair.b] else float(scores[pair.a] > scores[pair.b]) for pair in judged
        ]
        decided = [(pair.score, verdict) for pair, verdict in zip(judged, verdicts, strict=True) if pair.score != 0.5]
        result.agreement = (sum(human == verdict for human, verdict in decided), len(decided))
        pairs = [replace(pair, score=verdict) for pair, verdict in zip(judged, verdicts, strict=True)]
    names: dict[str, int] = {}
    table = [
        (
            names.setdefault(pair.origin_a, len(names)),
            names.setdefault(pair.origin_b, len(names)),
            pair.score,
            (pair.length_a - pair.length_b) / max(pair.length_a + pair.length_b, 1),
            pair.judgement_id,
        )
        for pair in pairs
    ]
    result.comparisons = leaderboard.Comparisons.from_rows(list(names), table)
    answers: dict[int, tuple[str, int]] = {}
    for pair in pairs:
        answers[pair.a], answers[pair.b] = (pair.origin_a, pair.length_a), (pair.origin_b, pair.length_b)
    by_origin: dict[str, list[int]] = {}
    for origin, length in answers.values():
        by_origin.setdefault(origin, []).append(length)
    result.lengths = {origin: sum(lengths) / len(lengths) for origin, lengths in by_origin.items()}
    return result


def project_leaderboard(
    *, project: Project, judge: str = "human", eval_only: bool = False, reference: str | None = None, seed: int = 0
) -> "leaderboard.Leaderboard":
    """The leaderboard of the origins compared in the project's judgements by ``judge``."""
    from labeling import leaderboard

    judged = version_comparisons(project=project, judge=judge, eval_only=eval_only)
    board = leaderboard.leaderboard(judged.comparisons, reference=reference, seed=seed, lengths=judged.lengths)
    if judge == "reward":
        agreed, compared = judged.agreement
        if judged.reward_model is None:
            board.notes.append("The project has no current reward model.")
        else:
            board.notes.append(
                f"Judged by {judged.reward_model.name}: it orders {agreed} of {compared} comparisons as the raters "
                f"did{f' ({agreed / compared:.0%})' if compared else ''}."
            )
        if judged.unscored:
            board.notes.append(
                f"{judged.unscored} compared pairs have no score from the reward model: start a score run."
            )
    return board


# --- the over-optimisation check -----------------------------------------------------------------------------


def probe_origin(run: "TrainingRun", step: int) -> str:
    """The origin of a PPO run's probe answers at ``step``: what raters' verdicts on them are counted by."""
    return f"{run.kind}-{run.pk}@{step}"


def probe_records(run: "TrainingRun") -> list[dict]:
    """The run's probe answers (``training.probes``): step, prompt id, response, score, KL."""
    from labeling.artefacts import StoreError, store
    from training.runtime import PROBES_FILE

    if not run.output_dir:
        return []
    try:
        text = store().read_text(f"{run.output_dir}/{PROBES_FILE}")
    except StoreError:
        return []
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class ProbePoint:
    step: int
    kl: float  # mean KL to the reference of the probe answers: the KL budget spent by then
    score: float  # their mean reward-model score
    answers: int
    win_rate: float | None = None  # raters' verdict against the starting policy's answers (ties half)
    win_interval: tuple[float, float] | None = None
    comparisons: int = 0


@dataclass(frozen=True)
class OveroptimisationReport:
    points: list[ProbePoint]
    sent: dict | None  # what was sent to raters: tasks and prompts
    warning: str = ""  # the proxy score rose while the raters' verdict fell


def overoptimisation_report(*, run: "TrainingRun", seed: int = 0) -> OveroptimisationReport:
    """At each probe point of a PPO run: the KL spent, the reward model's mean score of the probe answers and
    the raters' win rate for them against the starting policy's answers, with its 95% bootstrap interval. A
    warning when a later point has a higher score than the point the raters liked best, yet a win rate whose
    interval lies wholly below that point's (Gao et al.'s over-optimisation: the proxy rises, the truth falls)."""
    from labeling import leaderboard

    records = probe_records(run)
    by_step: dict[int, list[dict]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    origins = {probe_origin(run, step): step for step in by_step}
    start = probe_origin(run, 0)
    pairs = [
        pair
        for pair in version_pairs(project=run.project)
        if {pair.origin_a, pair.origin_b} <= set(origins) and start in (pair.origin_a, pair.origin_b)
    ]
    names: dict[str, int] = {}
    table = [
        (names.setdefault(pair.origin_a, len(names)), names.setdefault(pair.origin_b, len(names)), pair.score, 0.0,
         pair.judgement_id)
        for pair in pairs
    ]  # fmt: skip
    verdicts: dict[str, leaderboard.Standing] = {}
    if table:
        board = leaderboard.leaderboard(
            leaderboard.Comparisons.from_rows(list(names), table), reference=start, seed=seed
        )
        verdicts = {row.name: row for row in board.standings}
    points = []
    for step, answers in sorted(by_step.items()):
        verdict = verdicts.get(probe_origin(run, step))
        points.append(
            ProbePoint(
                step=step,
                kl=sum(answer["kl"] for answer in answers) / len(answers),
                score=sum(answer["score"] for answer in answers) / len(answers),
                answers=len(answers),
                win_rate=verdict.win_rate if verdict and step else None,
                win_interval=verdict.win_interval if verdict and step else None,
                comparisons=verdict.reference_comparisons if verdict and step else 0,
            )
        )
    return OveroptimisationReport(points=points, sent=(run.metrics or {}).get("overoptimisation_sent"),
                                  warning=_overoptimisation_warning(points))  # fmt: skip


def _overoptimisation_warning(points: list[ProbePoint]) -> str:
    judged = [point for point in points if point.win_rate is not None]
    if len(judged) < 2:
        return ""
    best = max(judged, key=lambda point: point.win_rate or 0.0)
    for later in judged:
        assert later.win_rate is not None and best.win_rate is not None
        rose = later.step > best.step and later.score > best.score
        if rose and later.win_interval is not None and later.win_interval[1] < best.win_rate:
            return (
                f"Over-optimisation: from step {best.step} to step {later.step} the reward model's score rose "
                f"from {best.score:.2f} to {later.score:.2f} while the raters' win rate against the start fell "
                f"from {best.win_rate:.2f} to {later.win_rate:.2f} (95% interval {later.win_interval[0]:.2f} to "
                f"{later.win_interval[1]:.2f}). The policy is exploiting the reward model: prefer an earlier "
                "checkpoint, a larger KL penalty, or a reward model trained on more recent labels."
            )
    return ""


# --- The model in the loop ---------------------------------------------------------------------------------------


def projects_in_the_loop() -> QuerySet[Project]:
    """Projects with a current reward model: it scores their open tasks' responses as they arrive."""
    current = ModelVersion.objects.filter(project=OuterRef("pk"), kind=ModelVersion.Kind.REWARD, is_current=True)
    return Project.objects.filter(Exists(current)).order_by("pk")


ORIGIN_SLICE = "origin"


@dataclass
class RewardAgreement:
    """The current reward model against the raters' judgements made after its training data was taken."""

    reward_model: ModelVersion | None
    since: datetime | None = None
    checks: list[live_agreement.CheckedJudgement] = field(default_factory=list)
    # New human judgements it cannot check yet: it has not scored all their responses.
    unchecked: int = 0
    slice_key: str = ORIGIN_SLICE
    slice_keys: list[str] = field(default_factory=lambda: [ORIGIN_SLICE])
    drift: live_agreement.Drift | None = None
    # Of the open tasks' responses, how many it has scored, and how many there are.
    scored: int = 0
    open_responses: int = 0

    def by(self, what: str) -> list[live_agreement.Figure]:
        """Figures by ``rater``, ``week`` or ``slice``; ``all`` is one figure."""
        keys = {
            "all": lambda check: "all",
            "rater": lambda check: check.rater,
            "week": lambda check: live_agreement.week_of(check.created_at),
            "slice": lambda check: check.slice,
        }
        return live_agreement.figures_by(self.checks, keys[what])

    def as_dict(self) -> dict:
        version = self.reward_model
        return {
            "reward_model": version.name if version else None,
            "held_out_accuracy": self.drift.held_out if self.drift else None,
            "since": self.since.isoformat() if self.since else None,
            "unchecked": self.unchecked,
            "scored_open_responses": self.scored,
            "open_responses": self.open_responses,
            "slice_key": self.slice_key,
            "slice_keys": self.slice_keys,
            "overall": next((figure.as_dict() for figure in self.by("all")), None),
            "by_rater": [figure.as_dict() for figure in self.by("rater")],
            "by_week": [figure.as_dict() for figure in self.by("week")],
            "by_slice": [figure.as_dict() for figure in self.by("slice")],
            "drift": self.drift.as_dict() if self.drift else None,
        }


def reward_model_agreement(*, project: Project, slice_key: str = ORIGIN_SLICE) -> RewardAgreement:
    """Each human judgement made since the current reward model's training data was taken (its snapshot; else
    since it was registered), checked against the model's stored scores of the same responses
    (``labeling.live_agreement``), sliced by the responses' origins or by a prompt metadata key."""
    current = (
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, is_current=True)
        .select_related("snapshot")
        .first()
    )
    open_slots = TaskResponse.objects.filter(task__project=project, task__status=ComparisonTask.Status.OPEN)
    open_responses = open_slots.values("response_id").distinct()
    if current is None:
        return RewardAgreement(reward_model=None, open_responses=open_responses.count())
    since = current.snapshot.created_at if current.snapshot else current.created_at
    judgements = Judgement.objects.filter(
        task__project=project, source=Judgement.Source.HUMAN, created_at__gt=since
    ).values_list("pk", "rater__username", "created_at", "ranking", "task_id", "task__prompt__metadata")
    rows = list(judgements.iterator(chunk_size=2000))
    slots = TaskResponse.objects.filter(task_id__in={row[4] for row in rows}).values_list(
        "task_id", "response_id", "response__origin"
    )
    origins: dict[int, set[str]] = {}
    response_ids = set()
    for task_id, response_id, origin in slots.iterator(chunk_size=5000):
        origins.setdefault(task_id, set()).add(origin or "(no origin)")
        response_ids.add(response_id)
    scores = dict(
        ResponseScore.objects.filter(model_version=current, response_id__in=response_ids).values_list(
            "response_id", "score"
        )
    )
    keys = {key for row in rows for key in (row[5] or {})}
    result = RewardAgreement(
        reward_model=current, since=since, slice_key=slice_key, slice_keys=[ORIGIN_SLICE, *sorted(keys)],
        open_responses=open_responses.count(),
        scored=ResponseScore.objects.filter(model_version=current, response_id__in=open_responses).count(),
    )  # fmt: skip
    for judgement_id, rater, created_at, ranking, task_id, metadata in rows:
        checked = live_agreement.judgement_check(ranking or [], scores)
        if checked is None:
            result.unchecked += 1
            continue
        agreed, pairs = checked
        if not pairs:
            continue
        if slice_key == ORIGIN_SLICE:
            label = " / ".join(sorted(origins.get(task_id, ())))
        else:
            label = str((metadata or {}).get(slice_key, "(not set)"))
        result.checks.append(live_agreement.CheckedJudgement(judgement_id, rater, created_at, label, agreed, pairs))
    result.drift = live_agreement.drift_of(
        result.checks, window=project.drift_window, margin=project.drift_margin,
        held_out=(current.metrics or {}).get("eval_accuracy"),
    )  # fmt: skip
    return result
