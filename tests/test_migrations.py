from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import ProjectFactory, UserFactory, task_create


@pytest.mark.django_db
def test_the_models_and_the_migrations_agree():
    out = StringIO()
    # --check exits non-zero (SystemExit) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


BEFORE, AFTER = ("labeling", "0013_stored_html"), ("labeling", "0014_hold_back_reported_tasks")


def migrate_to(target):
    """Migrate to ``target``; the apps of that state."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def lease_function():
    """(checks open reports, row estimate, settings) of the lease function; None off PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_functiondef(oid), prorows, proconfig FROM pg_proc WHERE proname = 'labeling_lease_next'"
        )
        definition, rows, config = cursor.fetchone()
    return "labeling_taskproblemreport" in definition, rows, config


@pytest.mark.django_db(transaction=True)
def test_0014_turns_resolved_flags_into_outcomes_and_back_and_swaps_the_lease_function():
    task = task_create(project=ProjectFactory(), k=2)
    rater = UserFactory()
    tuned = ["enable_seqscan=off"]
    try:
        old = migrate_to(BEFORE).get_model("labeling", "TaskProblemReport")
        for message, resolved in [("Cut off.", True), ("Empty.", False)]:
            old.objects.create(task_id=task.pk, rater_id=rater.pk, message=message, resolved=resolved)
        assert lease_function() in (None, (False, 1, tuned))

        new = migrate_to(AFTER).get_model("labeling", "TaskProblemReport")
        rows = new.objects.order_by("message").values_list("message", "outcome", "closed_by", "closed_at")
        assert list(rows) == [("Cut off.", "resolved", None, None), ("Empty.", "open", None, None)]
        assert lease_function() in (None, (True, 1, tuned))
        new.objects.filter(message="Empty.").update(outcome="dismissed")

        old = migrate_to(BEFORE).get_model("labeling", "TaskProblemReport")
        assert list(old.objects.order_by("message").values_list("message", "resolved")) == [
            ("Cut off.", True),
            ("Empty.", True),
        ]
        assert lease_function() in (None, (False, 1, tuned))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def function_source(name: str) -> str | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", [name])
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_0021_adds_gold_scores_and_standings_and_swaps_the_functions_both_ways():
    before, after = ("labeling", "0020_import_skip_invalid"), ("labeling", "0021_gold_scoring_and_rater_standing")
    task = task_create(project=ProjectFactory(), k=2)
    try:
        old = migrate_to(before)
        assert "rater_paused" not in {field.name for field in old.get_model("labeling", "Judgement")._meta.fields}
        if connection.vendor == "postgresql":
            assert "v_gold OR" not in function_source("labeling_lease_next")
            assert "NOT is_gold" not in function_source("labeling_judgement_submit")
        new = migrate_to(after)
        judgement = new.get_model("labeling", "Judgement").objects.create(
            task_id=task.pk, origin="tests", ranking=[[1], [2]], client_submission_id="m1"
        )
        assert judgement.rater_paused is False and judgement.gold_score is None
        assert new.get_model("labeling", "Project").objects.get().gold_first_tasks == 5
        if connection.vendor == "postgresql":
            assert "v_gold OR" in function_source("labeling_lease_next")
            assert "NOT is_gold" in function_source("labeling_judgement_submit")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
