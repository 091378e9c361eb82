"""Problem reports: a rater reports a problem with a task they were given (the task is held back from every
rater while a report is open), and an admin resolves or dismisses it."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from labeling.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from labeling.models import Assignment, ComparisonTask, Judgement, TaskProblemReport, User
from labeling.permissions import is_staff
from labeling.services.assignment import retry_when_sqlite_is_locked
from labeling.services.saving import validate

OPEN_REPORTS_PER_RATER = 20  # per project: each open report holds a task back from every rater


@retry_when_sqlite_is_locked
def task_problem_report_create(*, rater: User, task_id: int, message: str) -> TaskProblemReport:
    """Store a rater's report of a problem with a task and pass the task on, so they are not asked to
    judge something broken. While the report is open no rater is given the task (see ``assignment_lease_next``).
    A rater reports only on a task they were given or judged, with at most ``OPEN_REPORTS_PER_RATER`` open
    reports per project (staff without limit)."""
    message = message.strip()
    if not message:
        raise ApplicationError("Describe the problem.", {"fields": {"message": ["This field is required."]}})
    if not is_staff(rater):
        _report_allowed(rater, task_id)
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


def _report_allowed(rater: User, task_id: int) -> None:
    given = Assignment.objects.filter(task_id=task_id, rater=rater).exists()
    if not given and not Judgement.objects.filter(task_id=task_id, rater=rater).exists():
        raise PermissionDenied("You can report a problem only with a task you were given.")
    project_id = ComparisonTask.objects.filter(pk=task_id).values_list("project_id", flat=True).first()
    if project_id is None:
        raise NotFound(f"There is no task {task_id}.")
    open_reports = TaskProblemReport.objects.filter(
        rater=rater, task__project_id=project_id, outcome=TaskProblemReport.Outcome.OPEN
    ).count()
    if open_reports >= OPEN_REPORTS_PER_RATER:
        raise Conflict(
            f"You have {open_reports} open problem reports on this project, the most one rater may have: an "
            "administrator will close them first."
        )


def _task_problem_report_close(
    *, report: TaskProblemReport, outcome: str, closed_by: User, now: datetime | None
) -> TaskProblemReport:
    """Close an open report with ``outcome``, recording who closed it and when (inside the caller's
    transaction). Its task goes back to the pool once none of its reports is open."""
    if not is_staff(closed_by):
        raise PermissionDenied("Only administrators resolve or dismiss problem reports.")
    locked = TaskProblemReport.objects.select_for_update().filter(pk=report.pk).first()
    if locked is None:
        raise NotFound("That problem report no longer exists.")
    report = locked
    if report.outcome != TaskProblemReport.Outcome.OPEN:
        raise Conflict(f"Report {report.pk} is already {report.get_outcome_display().lower()}.")
    report.outcome = outcome
    report.closed_by = closed_by
    report.closed_at = now or timezone.now()
    validate(report, exclude=["task", "rater", "closed_by"])
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
