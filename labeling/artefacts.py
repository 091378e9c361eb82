"""The artefact store as the app sees it (``training.store``): ``ARTEFACTS_URL``, else the ``ARTEFACTS_DIR``
folder. Keys name what the database rows point at: ``snapshots/<project>/<file>``, ``runs/<kind>-<id>/...``
(a run's log, metrics and outputs) and a model version's folder within its run's.

A run works in a folder on the worker's machine (``run_folder``): the store's own folder when the store is
local, else the worker's ``WORK_DIR``, whose files go to the store when the trainer ends."""

from pathlib import Path

from django.conf import settings

from labeling.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.store import HASH_MARK, Store, StoreError

__all__ = ["Store", "StoreError", "model_reference", "run_folder", "run_key", "snapshot_reference", "store"]


def store() -> Store:
    """The configured store (fsspec keeps one client per S3 endpoint and credentials, so this is cheap)."""
    return Store(settings.ARTEFACTS_URL or settings.ARTEFACTS_DIR)


def local_folder(key: str) -> Path:
    """Where ``key``'s files are made on this machine before they are stored."""
    artefacts = store()
    return artefacts.local_path(key) if artefacts.is_local else Path(settings.WORK_DIR) / key


def run_key(run: TrainingRun) -> str:
    return f"runs/{run.kind}-{run.pk}"


def run_folder(run: TrainingRun) -> Path:
    return local_folder(run.output_dir or run_key(run))


def model_reference(version: ModelVersion) -> str:
    """How the trainer is told of a model version: its folder, or its URL in a remote store."""
    return store().url_for(version.artefact_path)


def snapshot_reference(snapshot: DatasetSnapshot) -> str:
    """How the trainer is told of a snapshot: its file, or its URL with the sha256 to check it against."""
    artefacts = store()
    url = artefacts.url_for(snapshot.path)
    return url if artefacts.is_local else f"{url}{HASH_MARK}{snapshot.sha256}"


def file_response(key: str, sha256: str, *, filename: str, content_type: str = "application/octet-stream"):
    """A stored file as a download, streamed from the store and checked on the way (``Store.stream``), with its
    sha256 in ``X-Content-SHA256``. Raises ``StoreError`` when the store does not hold it."""
    from django.http import StreamingHttpResponse

    artefacts = store()
    try:
        size = artefacts.fs.size(artefacts.path(key))
    except FileNotFoundError:
        raise StoreError(f"The artefact store holds no {key}.") from None
    response = StreamingHttpResponse(artefacts.stream(key, sha256), content_type=content_type)
    response["Content-Length"] = str(size)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-SHA256"] = sha256
    return response
