"""Snapshots: an export frozen as a read-only file with its hash, counts, filter and code version."""

import hashlib

from django.db import transaction
from django.utils import timezone

from config.version import code_version
from labeling import artefacts, selectors
from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot, Project, User


class _HashingWriter:
    """A binary stream that hashes what passes through it."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self.stream.closed


def dataset_snapshot_create(
    *,
    project: Project,
    kind: str,
    file_format: str = "jsonl",
    selection: selectors.ExportFilter | None = None,
    conversational: bool = False,
    created_by: User | None = None,
) -> DatasetSnapshot:
    """Freeze an export: write the file (read-only) and put it in the artefact store, checked on arrival, then
    record its sha256, row counts, filter and code version. Should recording fail, the file is removed again."""
    from labeling import exporters

    selection = selection or selectors.ExportFilter(project_id=project.pk)
    if selection.project_id != project.pk:
        raise ApplicationError("The export filter names another project.")
    store = artefacts.store()
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
    key = f"snapshots/{project.slug}/{stamp}-{kind}.{file_format}"
    final = artefacts.local_folder(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_suffix(final.suffix + ".partial")
    stored = False
    try:
        with open(partial, "wb") as raw:
            stream = _HashingWriter(raw)
            stats = exporters.write_export(kind, file_format, selection, stream, conversational=conversational)
        partial.chmod(0o444)
        partial.rename(final)
        if not store.is_local:
            if store.put_file(final, key) != stream.digest.hexdigest():
                raise ApplicationError(f"The snapshot file {key} changed while it was stored.")
            stored = True
            final.unlink()
        with transaction.atomic():
            return DatasetSnapshot.objects.create(
                project=project,
                kind=kind,
                file_format=file_format,
                filters={**selection.as_dict(), "conversational": conversational},
                path=key,
                sha256=stream.digest.hexdigest(),
                row_count=stats.rows,
                counts=stats.as_dict(),
                code_version=code_version(),
                created_by=created_by,
            )
    except BaseException:
        for leftover in (partial, final):
            leftover.unlink(missing_ok=True)
        if stored:
            store.remove(key)
        raise
