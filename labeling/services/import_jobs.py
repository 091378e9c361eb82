"""Imports as jobs: an upload is stored and queued at once (the API answers 202), then a Celery worker imports
it, streaming the file in one transaction. While it runs the worker writes its progress to a file next to the
upload, because the import's own transaction cannot show it to anyone else; the file doubles as the job's
heartbeat."""

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files.move import file_move_safe
from django.db import transaction
from django.utils import timezone

from labeling import importers
from labeling.errors import ApplicationError, PayloadTooLarge
from labeling.models import ImportJob, Project
from labeling.services.imports import dataset_import_file

logger = logging.getLogger(__name__)

EXECUTE_TASK = "labeling.tasks.import_job_execute_task"
UPLOAD_FILE = "upload"
PROGRESS_FILE = "progress.json"
PROGRESS_EVERY_S = 1.0
STOPPED = "The worker importing this file stopped before it finished; nothing was imported. Upload the file again."


def imports_dir() -> Path:
    return Path(settings.ARTEFACTS_DIR) / "imports"


def job_folder(job: ImportJob) -> Path:
    return imports_dir() / str(job.pk)


def upload_size_check(size: int | None) -> None:
    """Refuse (413) an upload larger than ``IMPORT_MAX_BYTES``, before its body is read when the request
    says its length."""
    limit = settings.IMPORT_MAX_BYTES
    if size is not None and size > limit:
        raise PayloadTooLarge(
            f"The upload is {size:,} bytes; imports take at most {limit:,} bytes (IMPORT_MAX_BYTES).",
            {"size": size, "limit": limit},
        )


def declared_size(meta) -> int | None:
    """A request's Content-Length, read before its body is (None when absent or not a number)."""
    try:
        return int(meta.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def import_job_url(job: ImportJob) -> str:
    return f"/api/v1/imports/{job.pk}"


def import_job_create(
    *,
    project: Project,
    upload,
    file_format: str = "auto",
    kind: str = "auto",
    origin: str = "",
    response_origin: str = "imported",
    skip_invalid: bool = False,
    created_by=None,
) -> ImportJob:
    """Store an uploaded file (moved, not copied, when Django spooled it to disk) and queue its import on a
    worker once the transaction commits. The file's format is checked now; its records when it is imported."""
    upload_size_check(upload.size)
    name = Path(upload.name or "upload").name[:255]
    file_format = importers.file_format_for(name, file_format)
    with transaction.atomic():
        job = ImportJob.objects.create(
            project=project, file_name=name, file_size=upload.size or 0, file_format=file_format, kind=kind,
            origin=origin or name, response_origin=response_origin, skip_invalid=skip_invalid, created_by=created_by,
        )  # fmt: skip
        folder = job_folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _store(upload, folder / UPLOAD_FILE)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job.path = str((folder / UPLOAD_FILE).relative_to(settings.ARTEFACTS_DIR))
        job.save(update_fields=["path"])
        transaction.on_commit(lambda: _queue(job))
    return job


def _store(upload, target: Path) -> None:
    if hasattr(upload, "temporary_file_path"):
        file_move_safe(upload.temporary_file_path(), str(target), allow_overwrite=True)
        return
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)


def _queue(job: ImportJob) -> None:
    from config.celery import app

    app.send_task(EXECUTE_TASK, args=[job.pk], queue=settings.CELERY_TASK_DEFAULT_QUEUE)


class _ProgressFile:
    """Writes ``{records, bytes_read, fraction}`` to the job's progress file, at most once a second."""

    def __init__(self, folder: Path, source: IO[bytes], size: int, file_format: str) -> None:
        self.path = folder / PROGRESS_FILE
        self.source = source
        self.size = size
        self.by_position = file_format != "parquet"  # a Parquet reader seeks around; rows are counted instead
        self.last = 0.0
        self.write(0)

    def __call__(self, records: int) -> None:
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.write(records)

    def write(self, records: int) -> None:
        progress: dict[str, float | int | None] = {"records": records, "bytes_read": None, "fraction": None}
        if self.by_position and self.size:
            with contextlib.suppress(OSError, ValueError):
                position = self.source.tell()
                progress.update(bytes_read=position, fraction=round(min(position / self.size, 1.0), 4))
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(progress), encoding="utf-8")
        os.replace(temporary, self.path)
        self.last = time.monotonic()


def import_job_progress(job: ImportJob) -> dict | None:
    """A running job's progress as its worker last wrote it: ``{records, bytes_read, fraction}``."""
    if job.status != ImportJob.Status.RUNNING:
        return None
    try:
        return json.loads((job_folder(job) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def import_job_execute(job_id: int, *, worker: str = "") -> str:
    """Import a queued job's file (on a Celery worker); returns the job's final status. A job that is not
    queued (already taken, or failed meanwhile) is left alone."""
    now = timezone.now()
    if not ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=now, worker=worker
    ):
        return ImportJob.objects.filter(pk=job_id).values_list("status", flat=True).first() or "missing"
    job = ImportJob.objects.select_related("project").get(pk=job_id)
    folder = job_folder(job)
    outcome: dict  # the job's final fields, by how the import ended
    try:
        with open(folder / UPLOAD_FILE, "rb") as source:
            report: Callable[[int], None] = _ProgressFile(folder, source, job.file_size, job.file_format)
            result = dataset_import_file(
                project=job.project, source=source, name=job.file_name, file_format=job.file_format, kind=job.kind,
                origin=job.origin, response_origin=job.response_origin, skip_invalid=job.skip_invalid,
                progress=report,
            )  # fmt: skip
    except ApplicationError as error:
        outcome = {
            "status": ImportJob.Status.FAILED,
            "error": f"{error.message} Nothing was imported.",
            "error_line": error.extra.get("line"),
            "error_field": error.extra.get("field") or "",
        }
    except FileNotFoundError:
        outcome = {"status": ImportJob.Status.FAILED, "error": "The uploaded file is missing from its folder."}
    except Exception as error:  # a bug or a lost database: the transaction rolled back, say so
        logger.exception("import job %s failed", job_id)
        outcome = {
            "status": ImportJob.Status.FAILED,
            "error": f"The import stopped on an unexpected error ({type(error).__name__}: {error}); nothing was "
            "imported.",
        }
    else:
        outcome = {
            "status": ImportJob.Status.SUCCEEDED, "kind": result.kind, "records": result.records,
            "created": result.created, "skipped": result.skipped, "invalid": result.invalid,
        }  # fmt: skip
    ImportJob.objects.filter(pk=job_id).update(finished_at=timezone.now(), **outcome)
    shutil.rmtree(folder, ignore_errors=True)
    return outcome["status"]


def import_jobs_fail_stale(*, worker: str | None = None, now=None) -> int:
    """Jobs left ``running`` by a worker that died (its import rolled back with it): this worker's own (it
    just restarted) and any whose progress file has not changed for the heartbeat timeout. Returns how many
    were marked failed."""
    now = now or timezone.now()
    timeout = settings.TRAINING_HEARTBEAT_TIMEOUT
    failed = 0
    for job in ImportJob.objects.filter(status=ImportJob.Status.RUNNING).only("pk", "worker", "started_at"):
        try:
            seen = datetime.fromtimestamp((job_folder(job) / PROGRESS_FILE).stat().st_mtime, tz=UTC)
        except OSError:
            seen = job.started_at or now
        if not ((worker and job.worker == worker) or seen < now - timedelta(seconds=timeout)):
            continue
        marked = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
            status=ImportJob.Status.FAILED, finished_at=now, error=STOPPED
        )
        if marked:
            shutil.rmtree(job_folder(job), ignore_errors=True)
        failed += marked
    return failed
