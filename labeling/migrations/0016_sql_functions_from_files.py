"""The PostgreSQL lease and submit functions from files: ``labeling/sql/`` holds their source, and this
migration runs its copies in ``labeling/migrations/sql/`` (a later change of the source comes with a migration
and copies of its own, so that this one keeps installing what it always did). The functions are those that
migrations 0012 to 0014 left, with the row estimate and the planner setting of 0013 written into them."""

import importlib
from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"
FILES = ["0016_lease_next.sql", "0016_judgement_submit.sql"]

human_only = importlib.import_module("labeling.migrations.0012_human_judgements_fill_slots")
tuning = importlib.import_module("labeling.migrations.0013_stored_html")
held_back = importlib.import_module("labeling.migrations.0014_hold_back_reported_tasks")


def functions_from_files(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in FILES:
            schema_editor.execute((SQL / name).read_text(encoding="utf-8"))


def functions_of_0014(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(held_back.LEASE_NEXT)
        schema_editor.execute(human_only.human_only_submit(human_only.functions.SUBMIT))
        tuning.functions_tune(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0015_promote_better_reward_model")]

    operations = [migrations.RunPython(functions_from_files, functions_of_0014)]
