"""Checks that several tables' constraints share."""

from django.db import models
from django.db.models import Q


def in_choices(field: str, choices: type[models.Choices]) -> Q:
    """A check constraint's condition: ``field`` holds one of ``choices``' values."""
    return Q(**{f"{field}__in": choices.values})
