"""Reads that are more than one ``.get()``: what a rater has left to do, what the admin lists."""

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from labeling.models import Assignment, ComparisonTask, Judgement, Project, Prompt
from labeling.permissions import projects_visible_to


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


def tasks_left_for_rater(*, user) -> QuerySet[ComparisonTask]:
    """Open tasks the rater has neither judged nor finished with (submitted or skipped)."""
    judged = Judgement.objects.filter(rater=user).values("task_id")
    finished = Assignment.objects.filter(
        rater=user, state__in=[Assignment.State.SUBMITTED, Assignment.State.SKIPPED]
    ).values("task_id")
    return (
        ComparisonTask.objects.filter(status=ComparisonTask.Status.OPEN).exclude(pk__in=judged).exclude(pk__in=finished)
    )


def project_list_for_user(*, user) -> QuerySet[Project]:
    """The projects the user may see, each annotated with ``tasks_left`` for this user."""
    return projects_visible_to(user).annotate(tasks_left=_count_per_project(tasks_left_for_rater(user=user), "project"))


def project_list_with_counts() -> QuerySet[Project]:
    """Every project with how many prompts, tasks, open tasks and judgements it holds (for the admin)."""
    return Project.objects.annotate(
        prompt_count=_count_per_project(Prompt.objects.all(), "project"),
        task_count=_count_per_project(ComparisonTask.objects.all(), "project"),
        open_task_count=_count_per_project(ComparisonTask.objects.filter(status=ComparisonTask.Status.OPEN), "project"),
        judgement_count=_count_per_project(Judgement.objects.all(), "task__project"),
    )
