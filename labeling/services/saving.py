"""Validation before a write: ``full_clean()``, with a refusal turned into an ApplicationError naming the field."""

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import models

from labeling.errors import ApplicationError


def validate(instance: models.Model, *, constraints: bool = True, exclude: Sequence[str] = ()) -> None:
    """``full_clean()``; a refusal becomes an ApplicationError naming the fields.

    ``constraints=False`` leaves the database constraints to the database (a query each saved), for hot
    paths that hold the locks which make uniqueness hold anyway; ``exclude`` skips fields already known to be
    valid (a foreign key to a row just read, for instance).
    """
    try:
        instance.full_clean(exclude=exclude, validate_unique=constraints, validate_constraints=constraints)
    except ValidationError as error:
        fields = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
        first_field, messages = next(iter(fields.items()))
        where = "" if first_field == "__all__" else f"{first_field}: "
        raise ApplicationError(f"{where}{messages[0]}", {"fields": fields}) from error


def save_validated(instance: models.Model) -> None:
    validate(instance)
    instance.save()
