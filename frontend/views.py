"""Pages for raters. Each view checks access through labeling.permissions and reads through selectors."""

from django.contrib.auth import views as auth_views
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from labeling import permissions, selectors


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


@permissions.rater_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = selectors.project_list_for_user(user=request.user).order_by("name")
    return render(
        request,
        "frontend/projects.html",
        {"projects": projects, "is_staff": permissions.is_staff(request.user)},
    )


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose: answers 200 when the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
