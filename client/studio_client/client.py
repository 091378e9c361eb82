"""A typed client for RLHF Studio's API (``/api/v1/``), with token authentication.

Every list is followed to its last page; every error answer (``{"message", "extra"}``) becomes a
:class:`StudioError` with the status code, the message and the fields it names. Long work (imports, runs) can be
waited for with a callback that hears its progress."""

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import requests

ENDED_RUN = ("succeeded", "failed", "cancelled")
ENDED_IMPORT = ("succeeded", "failed")


class Project(TypedDict, total=False):
    id: int
    name: str
    slug: str


class Snapshot(TypedDict, total=False):
    id: int
    kind: str
    file_format: str
    row_count: int
    sha256: str
    counts: dict
    filters: dict
    created_at: str


class Run(TypedDict, total=False):
    id: int
    project: str
    kind: str
    status: str
    phase: str
    progress: float
    eta_s: float | None
    base_model: str
    config: dict
    metrics: dict
    error: str
    model_version: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    history: list[dict]


class Version(TypedDict, total=False):
    id: int
    project: str
    kind: str
    name: str
    is_current: bool
    base_model: str
    parent: int | None
    training_run: int | None
    metrics: dict


class StudioError(Exception):
    """An answer other than success: ``status`` (0 when the server could not be reached), the API's message,
    and ``fields``, the settings or fields it names as wrong."""

    def __init__(self, status: int, message: str, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra or {}

    @property
    def fields(self) -> dict[str, list[str]]:
        fields = self.extra.get("fields")
        return fields if isinstance(fields, dict) else {}

    def __str__(self) -> str:
        named = "; ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in self.fields.items())
        return f"{self.message} ({named})" if named else self.message


class Client:
    """``Client("https://studio.example.org", token="...")``; the token is an API token of a staff account (the
    admin's "Tokens", or ``manage.py drf_create_token``). ``STUDIO_URL`` and ``STUDIO_TOKEN`` are the defaults."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0) -> None:
        url = url or os.environ.get("STUDIO_URL", "")
        if not url:
            raise StudioError(0, "Name the server: Client(url=...) or STUDIO_URL.")
        self.base = url.rstrip("/") + "/api/v1/"
        self.timeout = timeout
        self.session = requests.Session()
        token = token if token is not None else os.environ.get("STUDIO_TOKEN", "")
        if token:
            self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Accept"] = "application/json"

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else self.base + path.lstrip("/")
        try:
            answer = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise StudioError(0, f"Could not reach {url}: {error}") from None
        if answer.status_code >= 400:
            try:
                body = answer.json()
            except ValueError:
                body = {}
            message = body.get("message") if isinstance(body, dict) else None
            detail = body.get("detail") if isinstance(body, dict) else None
            raise StudioError(
                answer.status_code,
                message or detail or f"{method} {url} answered {answer.status_code}.",
                body.get("extra") if isinstance(body, dict) else None,
            )
        return answer

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def _pages(self, path: str, params: dict | None = None) -> Iterator[Any]:
        """Every row of a paginated list, page after page."""
        page = self._json("GET", path, params={key: value for key, value in (params or {}).items() if value})
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self._json("GET", page["next"])

    # --- projects, imports, exports, snapshots ------------------------------------------------------------------

    def projects(self) -> list[Project]:
        return list(self._pages("projects"))

    def project(self, slug: str) -> Project:
        return self._json("GET", f"projects/{slug}")

    def import_file(
        self, slug: str, path: str | Path, *, file_format: str = "auto", kind: str = "auto", wait: bool = True,
        on_progress: Callable[[dict], None] | None = None, poll_seconds: float = 1.0,
    ) -> dict:  # fmt: skip
        """Upload a JSONL, CSV or Parquet file to import; with ``wait``, poll the import until it ends (raising
        :class:`StudioError` with its line and field when it fails) and return the finished job."""
        path = Path(path)
        with open(path, "rb") as upload:
            job = self._json(
                "POST", f"projects/{slug}/imports", files={"file": (path.name, upload)},
                data={"format": file_format, "kind": kind},
            )  # fmt: skip
        while wait and job["status"] not in ENDED_IMPORT:
            time.sleep(poll_seconds)
            job = self._json("GET", f"imports/{job['id']}")
            if on_progress:
                on_progress(job)
        if wait and job["status"] == "failed":
            raise StudioError(400, job.get("error") or "The import failed.", {"line": job.get("error_line")})
        return job

    def export(self, slug: str, kind: str, target: str | Path, *, file_format: str = "jsonl", **filters) -> Path:
        """Stream an export (``preference``, ``ranking``, ``sft``, ...) to ``target``; filters as the API takes
        them (``since``, ``until``, ``rater``, ``source``, ``gold``, ``eval``)."""
        target = Path(target)
        params = {"format": file_format, **filters}
        answer = self._request("GET", f"projects/{slug}/exports/{kind}", params=params, stream=True)
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as out:
            for chunk in answer.iter_content(1 << 20):
                out.write(chunk)
        partial.replace(target)
        return target

    def snapshot(self, slug: str, kind: str, *, file_format: str = "jsonl", **filters) -> Snapshot:
        """Freeze an export as a snapshot."""
        return self._json("POST", f"projects/{slug}/snapshots", json={"kind": kind, "format": file_format, **filters})

    def snapshots(self, slug: str) -> list[Snapshot]:
        return list(self._pages(f"projects/{slug}/snapshots"))

    def download_snapshot(self, snapshot_id: int, target: str | Path) -> Path:
        target = Path(target)
        answer = self._request("GET", f"snapshots/{snapshot_id}/download", stream=True)
        with open(target, "wb") as out:
            for chunk in answer.iter_content(1 << 20):
                out.write(chunk)
        return target

    # --- runs and models -----------------------------------------------------------------------------------------

    def runs(self, slug: str, *, kind: str = "", status: str = "") -> list[Run]:
        return list(self._pages(f"projects/{slug}/runs", {"kind": kind, "status": status}))

    def start_run(self, slug: str, kind: str, **config) -> Run:
        """Queue a run of ``kind`` (reward, sft, dpo, ppo, generate, evaluate, ...) with the settings of its admin
        page; a wrong setting raises :class:`StudioError` whose ``fields`` name it."""
        return self._json("POST", f"projects/{slug}/runs", json={"kind": kind, "config": config})

    def run(self, run_id: int, *, history: bool = False) -> Run:
        return self._json("GET", f"runs/{run_id}", params={"history": "true"} if history else None)

    def cancel_run(self, run_id: int) -> Run:
        return self._json("POST", f"runs/{run_id}/cancel")

    def wait_for_run(
        self, run_id: int, *, on_progress: Callable[[Run], None] | None = None, poll_seconds: float = 2.0,
        timeout: float | None = None,
    ) -> Run:  # fmt: skip
        """Poll a run until it ends; ``on_progress`` hears it after each poll. Returns the ended run (whatever its
        status: check ``run["status"]``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if on_progress:
                on_progress(run)
            if run["status"] in ENDED_RUN:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise StudioError(0, f"Run {run_id} did not end within {timeout} s (it is {run['status']}).")
            time.sleep(poll_seconds)

    def models(self, slug: str, *, kind: str = "") -> list[Version]:
        return list(self._pages(f"projects/{slug}/models", {"kind": kind}))

    def model(self, model_id: int) -> Version:
        return self._json("GET", f"models/{model_id}")

    def make_current(self, model_id: int) -> Version:
        return self._json("POST", f"models/{model_id}/current")

    def leaderboard(self, slug: str, *, judge: str = "human", prompts: str = "") -> dict:
        """Bradley-Terry strengths of the project's versions with their intervals and win rates."""
        return self._json("GET", f"projects/{slug}/leaderboard", params={"judge": judge, "prompts": prompts or None})
