"""The PostgreSQL functions' source files in labeling/sql/ are what the migrations install."""

import re
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "labeling" / "sql").glob("*.sql"))
COPIES = ROOT / "labeling" / "migrations" / "sql"


def latest_copy(source: Path) -> Path | None:
    """The newest migration's copy of ``source`` (``NNNN_<name>.sql``)."""
    copies = sorted(COPIES.glob(f"[0-9][0-9][0-9][0-9]_{source.name}"))
    return copies[-1] if copies else None


def test_there_are_function_sources():
    assert {source.name for source in SOURCES} >= {"lease_next.sql", "judgement_submit.sql"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_the_newest_migration_installs_the_source_as_it_is_now(source):
    copy = latest_copy(source)
    assert copy is not None, f"no migration installs {source.name}: copy it to {COPIES}/NNNN_{source.name}"
    assert copy.read_text() == source.read_text(), (
        f"{source.name} changed since {copy.name}: add a migration with a copy of it"
    )
    migration = next(COPIES.parent.glob(f"{copy.name[:4]}_*.py"), None)
    assert migration is not None and copy.name in migration.read_text(), f"no migration {copy.name[:4]} runs it"


def function_body(sql: str) -> str:
    return re.search(r"AS \$\$(.*)\$\$;", sql, re.S).group(1)


def installed(name: str) -> tuple[str, list] | None:
    """(body, settings) of the database's function ``name``; None off PostgreSQL (SQLite keeps the Python path)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc, proconfig FROM pg_proc WHERE proname = %s", [name])
        return cursor.fetchone()


@pytest.mark.django_db
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_the_database_runs_the_source(source):
    """On PostgreSQL (CI) the installed function's body and settings are the file's."""
    sql = source.read_text()
    name = re.search(r"CREATE OR REPLACE FUNCTION (\w+)\(", sql).group(1)
    assert installed(name) in (None, (function_body(sql), ["enable_seqscan=off"]))
