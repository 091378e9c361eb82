"""A real Celery worker process for tests, on the broker and database the tests use."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The URL of the database this test process is connected to (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    return f"postgres://{credentials}@{host}/{db['NAME']}"


@dataclass
class Worker:
    queue: str
    process: subprocess.Popen
    log_path: Path

    def result(self, async_result, timeout: float = 90.0):
        """The task's return value; fails with the worker's log if the worker dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if async_result.ready():
                return async_result.get(timeout=1)
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.2)
        raise AssertionError(f"no result within {timeout} s; worker log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")


@contextmanager
def celery_worker(log_dir: Path, environment: dict[str, str] | None = None, **folders: Path) -> Iterator[Worker]:
    """Start ``celery worker`` as a subprocess listening on a queue of its own, so that no other worker on
    the same broker takes the test's messages; stop it afterwards. ``folders`` (``VAR_DIR=...``) give it local
    folders of its own, as a worker on another machine has; ``environment`` sets other settings."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_BROKER_DIR": str(settings.CELERY_BROKER_DIR),
        "VAR_DIR": str(settings.VAR_DIR),
        "ARTEFACTS_DIR": str(settings.ARTEFACTS_DIR),
        "MODEL_CACHE_DIR": str(settings.MODEL_CACHE_DIR),
        "WORK_DIR": str(settings.WORK_DIR),
        "ARTEFACTS_URL": settings.ARTEFACTS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        **{name: str(folder) for name, folder in folders.items()},
        **(environment or {}),
    }
    log_path = log_dir / f"worker-{queue}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", queue,
             "--hostname", f"{queue}@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield Worker(queue=queue, process=process, log_path=log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_end(run, worker: Worker, timeout: float = 180):
    """Poll a training run until it ends; fails with the worker log if the worker dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status not in ("queued", "running"):
            return run
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker died:\n{worker.log()}")
        time.sleep(0.5)
    raise AssertionError(f"run still {run.status} after {timeout} s; worker log:\n{worker.log()}")
