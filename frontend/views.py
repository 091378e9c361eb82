"""Pages for raters. Each view checks access through labeling.permissions and reads through selectors."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from labeling import permissions, selectors
from labeling.models import Flag, Project
from labeling.rendering import markdown_to_safe_html


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True


@permissions.rater_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.project_list_for_user(user=request.user).order_by("name"))
    figures = selectors.own_figures(user=request.user, projects=projects, now=timezone.now())
    reviews = selectors.open_reviews_by_project(user=request.user) if permissions.is_reviewer(request.user) else {}
    for project in projects:
        project.own = figures[project.pk]  # type: ignore[attr-defined]
        project.reviews_open = reviews.get(project.pk, 0)  # type: ignore[attr-defined]
    return render(
        request,
        "frontend/projects.html",
        {"projects": projects, "is_staff": permissions.is_staff(request.user)},
    )


def _project_or_404(request: HttpRequest, slug: str) -> Project:
    project = permissions.projects_visible_to(request.user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project is open to you.")
    return project


@permissions.rater_required
def workbench(request: HttpRequest, slug: str) -> HttpResponse:
    """Compare, rank, rate and flag: the page loads tasks from the API one after another."""
    project = _project_or_404(request, slug)
    return render(
        request,
        "frontend/workbench.html",
        {
            "project": project,
            "guidelines_html": markdown_to_safe_html(project.guidelines),
            "flags": [[flag.value, flag.label] for flag in Flag],
        },
    )


@permissions.rater_required
def demonstrate(request: HttpRequest, slug: str) -> HttpResponse:
    """Write ideal replies to the project's prompts."""
    project = _project_or_404(request, slug)
    if not project.demonstrate_enabled:
        raise Http404("This project does not collect demonstrations.")
    return render(
        request,
        "frontend/demonstrate.html",
        {"project": project, "guidelines_html": markdown_to_safe_html(project.guidelines)},
    )


@permissions.rater_required
def review(request: HttpRequest, slug: str) -> HttpResponse:
    """Review the model's critique-and-revise chains: accept, edit or reject each final revision."""
    project = _project_or_404(request, slug)
    return render(
        request,
        "frontend/review.html",
        {"project": project, "guidelines_html": markdown_to_safe_html(project.guidelines)},
    )


@login_required
def adjudicate(request: HttpRequest, slug: str) -> HttpResponse:
    """Settle the tasks whose judgements disagree: read every judgement (raters unnamed), then record the final
    ranking with the keyboard or send the task back for one more judgement. Reviewers only."""
    if not permissions.is_reviewer(request.user):
        raise PermissionDenied("This page is for reviewers.")
    project = permissions.projects_reviewable_by(request.user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project is open to you.")
    return render(
        request,
        "frontend/adjudicate.html",
        {"project": project, "guidelines_html": markdown_to_safe_html(project.guidelines)},
    )


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose: answers 200 when the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
