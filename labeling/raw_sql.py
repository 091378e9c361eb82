"""The plain SQL the hot paths run instead of the ORM: select lists and model instances built from raw rows,
the joins that read a task's content, and many-row inserts (COPY on PostgreSQL). Table and column names always
come from the models; values are always parameters."""

from collections.abc import Sequence
from functools import cache
from typing import TypeVar, cast

from django.db import connection, models
from django.utils import timezone

from labeling.models import Prompt, Response, TaskResponse

BULK_BATCH = 2000
M = TypeVar("M", bound=models.Model)


def column_of(model_field) -> str:
    """A concrete field's column name (always set on concrete fields, though the type allows None)."""
    return cast(str, model_field.column)


@cache
def _converters(model: type[models.Model], vendor: str) -> list:
    """Each column's database converters, as the ORM applies them (JSON from SQLite text, durations, ...)."""
    table = model._meta.db_table
    converters = []
    for model_field in model._meta.concrete_fields:
        column = model_field.get_col(table)
        converters.append((column, connection.ops.get_db_converters(column) + column.get_db_converters(connection)))
    return converters


def columns_of(model: type[models.Model], alias: str = "") -> str:
    """The select list of all of ``model``'s columns, in field order, for ``instance_from_row``."""
    quote = connection.ops.quote_name
    prefix = alias or model._meta.db_table
    return ", ".join(f"{prefix}.{quote(column_of(model_field))}" for model_field in model._meta.concrete_fields)


def instance_from_row(model: type[M], values: Sequence) -> M:
    """A model instance from the values of ``columns_of(model)`` in a plain-SQL row, as the ORM would build it."""
    converted = []
    for (column, converters), value in zip(_converters(model, connection.vendor), values, strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        converted.append(value)
    names = [model_field.attname for model_field in model._meta.concrete_fields]
    return model.from_db(connection.alias, names, converted)


def task_content_sql() -> tuple[str, str]:
    """The select list and the joins that read a task's content, from a task aliased ``t``: one row per
    response, in the task's order, of (response id, text, html, prompt messages, prompt messages' html), for
    ``task_content_from_rows``. The lease call on PostgreSQL reads them in its own statement."""
    slot, response, prompt = (model._meta.db_table for model in (TaskResponse, Response, Prompt))
    columns = "s.response_id, r.text, r.html, p.messages, p.messages_html"
    joins = f"""
        JOIN {prompt} p ON p.id = t.prompt_id
        LEFT JOIN {slot} s ON s.task_id = t.id
        LEFT JOIN {response} r ON r.id = s.response_id
    """
    return columns, joins


def insert_rows(model: type[models.Model], rows: list[dict]) -> list[int]:
    """Insert many new rows, given as ``{field attname: value}`` (other fields take their defaults); returns
    their primary keys in order.

    On PostgreSQL the ids come from the table's sequence and the rows go in with COPY, without building a
    model instance per row: several times faster for imports of hundreds of thousands of rows. Elsewhere this
    is ``bulk_create``. Rows must be valid already: this writes them as they are.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        objects = model._default_manager.bulk_create([model(**row) for row in rows], batch_size=BULK_BATCH)
        return [obj.pk for obj in objects]
    from psycopg.types.json import Jsonb

    now = timezone.now()
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    defaults = {}
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            defaults[field.attname] = now
        else:
            defaults[field.attname] = field.get_default()  # "" for text fields that are not nullable
    json_fields = {field.attname for field in fields if isinstance(field, models.JSONField)}
    table = model._meta.db_table
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, column_of(model._meta.pk), len(rows)],
        )
        ids = [pk for (pk,) in cursor.fetchall()]
        columns = ", ".join(
            quote(name) for name in [column_of(model._meta.pk), *(column_of(field) for field in fields)]
        )
        with cursor.cursor.copy(f"COPY {quote(table)} ({columns}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows, strict=True):
                values = [pk]
                for field in fields:
                    value = row.get(field.attname, defaults[field.attname])
                    if value is not None and field.attname in json_fields:
                        value = Jsonb(value)
                    values.append(value)
                copy.write_row(values)
    return ids
