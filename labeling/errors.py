"""One error family for everything a service refuses. Views and the API turn it into
``{"message": ..., "extra": ...}`` with the right status code; commands print the message."""

import logging
import uuid

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A request the product understood and refuses, with a message fit for the person who made it."""

    status_code = 400

    def __init__(self, message: str, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class NotFound(ApplicationError):
    status_code = 404


class PermissionDenied(ApplicationError):
    status_code = 403


class Conflict(ApplicationError):
    status_code = 409


class PayloadTooLarge(ApplicationError):
    status_code = 413


class RecordError(ApplicationError):
    """A bad record: the message names the line (or row) and the field."""

    def __init__(self, line: int, field_name: str | None, problem: str) -> None:
        where = f"Line {line}" + (f", field '{field_name}'" if field_name else "")
        super().__init__(f"{where}: {problem}", {"line": line, "field": field_name})


def _first_message(data) -> str:
    """The first human-readable message inside DRF's nested error data, with its field name."""
    if isinstance(data, dict):
        for field, value in data.items():
            inner = _first_message(value)
            if field in ("detail", "non_field_errors", "__all__"):
                return inner
            return f"{field}: {inner}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data)


def api_exception_handler(exc, context):
    """Every API error as ``{"message": ..., "extra": ...}`` with the right status code."""
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.db import InterfaceError, OperationalError
    from rest_framework import exceptions
    from rest_framework.response import Response
    from rest_framework.views import exception_handler, set_rollback

    from labeling.middleware import DATABASE_DOWN, RETRY_AFTER_S

    if isinstance(exc, ApplicationError):
        return Response({"message": exc.message, "extra": exc.extra}, status=exc.status_code)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", exc)
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        return Response({"message": DATABASE_DOWN, "extra": {}}, status=503, headers=retry)
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        exc = exceptions.ValidationError(fields)
    response = exception_handler(exc, context)
    if response is None:  # a bug: logged with an id the answer gives, so that the two can be matched
        set_rollback()
        request_id = uuid.uuid4().hex[:12]
        request = context.get("request")
        where = f"{request.method} {request.path}" if request is not None else "?"
        logger.error("unexpected error %s on %s", request_id, where, exc_info=exc)
        message = f"Something went wrong on our side (error {request_id}); it has been logged."
        return Response({"message": message, "extra": {"request_id": request_id}}, status=500)
    extra = {"fields": response.data} if isinstance(exc, exceptions.ValidationError) else {}
    response.data = {"message": _first_message(response.data), "extra": extra}
    return response


def not_found(request, exception=None):
    """The 404 page: under ``/api/`` the API's JSON shape (an address no route matches, such as a negative
    id), elsewhere Django's page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"message": f"There is nothing at {request.path}.", "extra": {}}, status=404)
    return page_not_found(request, exception)
