"""Finding the project or task a request names, within what the user may see: 404 otherwise, so that other
projects stay invisible."""

from rest_framework.request import Request

from labeling import permissions, selectors
from labeling.errors import NotFound
from labeling.models import ComparisonTask, Project


def project_for_rater(request: Request, slug: str) -> Project:
    """The project, if the user may label it."""
    project = selectors.project_for_labelling(user=request.user, slug=slug)
    if project is None:
        raise NotFound(f"No project '{slug}' is open to you.")
    return project


def task_for_rater(request: Request, task_id: int) -> ComparisonTask:
    task = ComparisonTask.objects.filter(pk=task_id, project__in=permissions.projects_visible_to(request.user)).first()
    if task is None:
        raise NotFound(f"There is no task {task_id} open to you.")
    return task


def project_for_staff(request: Request, slug: str) -> Project:
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise NotFound(f"There is no project '{slug}'.")
    return project
