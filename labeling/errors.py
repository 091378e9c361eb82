"""One error family for everything a service refuses. Views and the API turn it into
``{"message": ..., "extra": ...}`` with the right status code; commands print the message."""


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
