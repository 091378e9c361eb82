"""A throwaway PostgreSQL database for a benchmark: created and migrated on entry, with Django set up on it
in this process; dropped (connections closed) on exit."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _admin_sql(server_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(server_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(statement)


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[dict[str, str]]:
    """Yields the environment the app needs to run on the new database (for subprocesses, and already
    applied to this process); ``server_url`` needs the right to create databases."""
    parts = urlsplit(server_url)
    _admin_sql(server_url, f'CREATE DATABASE "{name}"')
    try:
        env = {
            **os.environ,
            "DATABASE_URL": urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment)),
            "SECRET_KEY": "bench-only-secret-key",
            "DEBUG": "false",
            "HTTPS": "false",  # the benches' servers speak plain HTTP on 127.0.0.1
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
        os.environ.update(env)
        migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
        subprocess.run(migrate, cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        yield env
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 (Django may never have been set up)
            pass
        _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
