"""What every request passes through: a NUL character in a query parameter or a form field is a 400 that names
the field (PostgreSQL's text cannot hold one, and the database would answer with an error page), and a
database that does not answer is a 503 with ``Retry-After`` instead of an error page."""

import logging

from csp.middleware import CSPMiddleware
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from labeling.validation import NUL_PROBLEM

logger = logging.getLogger(__name__)
RETRY_AFTER_S = 5
DATABASE_DOWN = "The database is not answering; try again in a few seconds."


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _answer(request: HttpRequest, status: int, message: str, extra: dict) -> HttpResponse:
    if is_api(request):
        return JsonResponse({"message": message, "extra": extra}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def database_unavailable(request: HttpRequest) -> HttpResponse:
    response = _answer(request, 503, DATABASE_DOWN, {})
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _nul_field(request: HttpRequest) -> str | None:
    """The first query parameter or form field holding a NUL character. A NUL arrives URL-encoded, so a
    request without "%00" is let through without parsing anything (the rater's loop pays nothing)."""
    forms = []
    if "%00" in request.META.get("QUERY_STRING", ""):
        forms.append(request.GET)
    if (
        request.content_type == "application/x-www-form-urlencoded" and not is_api(request)
        and b"%00" in request.body
    ):  # fmt: skip
        forms.append(request.POST)
    for form in forms:
        for key, values in form.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return key.replace("\x00", "\\0")
    return None


class RequestGuardMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = _nul_field(request)
        if field is not None:
            return _answer(request, 400, f"Field '{field}' {NUL_PROBLEM}", {"field": field})
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            logger.warning("database unavailable on %s %s: %s", request.method, request.path, exception)
            return database_unavailable(request)
        return None


# JSON answers load nothing and are never shown as pages: the strictest policy, as a constant.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's policy (settings.CONTENT_SECURITY_POLICY) on pages; on the JSON API a constant policy that
    allows nothing, without building one per answer (which cost the rater's loop a few percent)."""

    def process_response(self, request, response):
        if request.path_info.startswith("/api/v1/"):
            if "Content-Security-Policy" not in response:
                response["Content-Security-Policy"] = API_POLICY
            return response
        return super().process_response(request, response)
