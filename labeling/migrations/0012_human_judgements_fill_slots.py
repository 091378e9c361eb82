"""AI feedback labels sit beside human judgements: only human judgements fill a task's slots. The lease and
submit functions of migration 0008, counting human judgements only."""

import importlib

from django.db import migrations

functions = importlib.import_module("labeling.migrations.0008_postgres_lease_and_submit_functions")


def human_only(sql: str) -> str:
    replaced = sql
    for task in ("t.id", "v_task"):
        old = f"FROM labeling_judgement j WHERE j.task_id = {task})"
        new = f"FROM labeling_judgement j WHERE j.task_id = {task} AND j.source = 'human')"
        assert old in replaced, old
        replaced = replaced.replace(old, new)
    return replaced


def human_only_submit(sql: str) -> str:
    old = "FROM labeling_judgement j WHERE j.task_id = v_task)"
    assert sql.count(old) == 2, "both counts of the submit function"
    return sql.replace(old, "FROM labeling_judgement j WHERE j.task_id = v_task AND j.source = 'human')")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(human_only(functions.LEASE_NEXT))
        schema_editor.execute(human_only_submit(functions.SUBMIT))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(functions.LEASE_NEXT)
        schema_editor.execute(functions.SUBMIT)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0011_default_constitution")]

    operations = [migrations.RunPython(forwards, backwards)]
