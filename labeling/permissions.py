"""Who may do what. Every view, API class and admin hook asks here, nowhere else.

Three roles: raters (members of the "raters" group) label the projects they belong to; reviewers (the
"reviewers" group) settle the tasks of their projects whose judgements disagree, seeing those judgements and no
others, with the raters unnamed; staff administer everything (the admin, imports, exports, training). A rater
never sees another rater's work.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission

from labeling.models import Judgement, Project, User

RATERS_GROUP = "raters"
REVIEWERS_GROUP = "reviewers"


def is_staff(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def is_rater(user) -> bool:
    """Staff may label too; everyone else needs to be in the raters group (asked once per user object,
    that is once per request)."""
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_staff:
        return True
    if not hasattr(user, "_in_raters_group"):
        rater_membership_remember(user, user.groups.filter(name=RATERS_GROUP).exists())
    return user._in_raters_group


def is_reviewer(user) -> bool:
    """Staff, or a member of the reviewers group."""
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_staff:
        return True
    if not hasattr(user, "_in_reviewers_group"):
        user._in_reviewers_group = user.groups.filter(name=REVIEWERS_GROUP).exists()
    return user._in_reviewers_group


def projects_reviewable_by(user) -> QuerySet[Project]:
    if is_staff(user):
        return Project.objects.all()
    if is_reviewer(user):
        return Project.objects.filter(members=user)
    return Project.objects.none()


def rater_membership_remember(user, member: bool) -> None:
    """Keep the answer on the user object (the authentication backend reads it with the user)."""
    user._in_raters_group = member


def signed_in(user: User | AnonymousUser) -> User:
    """The user of a request the view's permission checks let through, as a ``User``."""
    if not isinstance(user, User):
        raise PermissionDenied
    return user


def projects_visible_to(user) -> QuerySet[Project]:
    if is_staff(user):
        return Project.objects.all()
    if is_rater(user):
        return Project.objects.filter(members=user)
    return Project.objects.none()


def judgements_visible_to(user) -> QuerySet[Judgement]:
    """Staff see every judgement; a rater sees their own and nobody else's."""
    if is_staff(user):
        return Judgement.objects.all()
    if is_rater(user):
        return Judgement.objects.filter(rater=user)
    return Judgement.objects.none()


def rater_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Log in first; then only raters (and staff) get through, others get 403."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_rater(request.user):
            raise PermissionDenied("This page is for raters.")
        return view(request, *args, **kwargs)

    return wrapper


class IsRater(BasePermission):
    """API access for raters (and staff)."""

    message = "This is for raters."

    def has_permission(self, request, view) -> bool:
        return is_rater(request.user)


class IsReviewer(BasePermission):
    """API access for reviewers (and staff)."""

    message = "This is for reviewers."

    def has_permission(self, request, view) -> bool:
        return is_reviewer(request.user)


class IsStaff(BasePermission):
    """API access for staff only: imports, exports, snapshots, training."""

    message = "This is for administrators."

    def has_permission(self, request, view) -> bool:
        return is_staff(request.user)
