"""The memory of a big import: a Celery worker imports a JSONL file of preference pairs (400 MB; ``--quick``:
40 MB) through the product's own path (the upload stored as an import job, queued, imported by the worker in
one transaction on PostgreSQL), and the worker's peak resident memory is read from the kernel.

Prints the worker's idle memory before the job, its peak during it, the peak's ratio to the file size and to
the 300 MB limit, and the import's speed; the last line is one JSON object. Goal: peak under 300 MB, whatever
the file's size (a whole-file import held 2.7 times the file).

    python bench/import_memory.py [--quick] [--megabytes N]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _postgres import DEFAULT_SERVER_URL, scratch_database  # noqa: E402

LIMIT_MB = 300
WORDS = [
    "the", "a", "model", "answer", "question", "reward", "helpful", "harmless", "policy", "human", "rater",
    "prefers", "because", "clear", "short", "long", "explains", "example", "careful", "wrong", "right", "safe",
    "detail", "reason", "step", "first", "then", "finally", "data", "label", "response",
]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 40 MB file")
    parser.add_argument("--megabytes", type=int, default=400, help="the size of the file to import")
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL URL that may create databases")
    args = parser.parse_args()
    if args.quick:
        args.megabytes = 40
    return args


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def write_pairs(path: Path, megabytes: int) -> int:
    """Preference pairs of about 1.5 kB each until the file holds ``megabytes``; returns how many."""
    rng = random.Random(0)
    target = megabytes * 1024 * 1024
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        while out.tell() < target:
            record = {
                "prompt": f"Question {count}: {text(rng, 40)}?",
                "chosen": text(rng, 100),
                "rejected": text(rng, 90),
            }
            out.write(json.dumps(record) + "\n")
            count += 1
    return count


def memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for process {pid}")


class FileUpload:
    """What Django hands a view for an upload it spooled to disk."""

    def __init__(self, path: Path) -> None:
        self.path, self.name, self.size = path, path.name, path.stat().st_size

    def temporary_file_path(self) -> str:
        return str(self.path)


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-memory-"))
    queue = f"bench-import-{os.getpid()}"
    os.environ.update(
        VAR_DIR=str(work / "var"), ARTEFACTS_DIR=str(work / "artefacts"), CELERY_BROKER_URL="filesystem://localhost//",
        CELERY_BROKER_DIR=str(work / "broker"),
    )  # fmt: skip
    source = work / "pairs.jsonl"
    started = time.perf_counter()
    records = write_pairs(source, args.megabytes)
    file_mb = source.stat().st_size / 1024 / 1024
    print(f"wrote {records:,} pairs, {file_mb:.0f} MB, in {time.perf_counter() - started:.1f} s")

    with scratch_database(args.server_url, f"rlhf_bench_import_{os.getpid()}") as env:
        from django.conf import settings

        from labeling import services
        from labeling.models import ImportJob

        log = open(work / "worker.log", "w", encoding="utf-8")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--queues", queue,
             "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
            cwd=ROOT, env={**env, **{key: os.environ[key] for key in ("VAR_DIR", "ARTEFACTS_DIR", "CELERY_BROKER_URL",
                                                                   "CELERY_BROKER_DIR")}},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            time.sleep(8)  # the worker imports Django and the app, then waits on the queue
            idle_mb = memory_mb(worker.pid, "VmRSS")
            settings.CELERY_TASK_DEFAULT_QUEUE = queue
            project = services.project_create(name="Import memory", slug="import-memory")
            started = time.perf_counter()
            job = services.import_job_create(project=project, upload=FileUpload(source))
            while True:
                job.refresh_from_db()
                if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
                    break
                if worker.poll() is not None:
                    raise SystemExit(f"the worker died:\n{(work / 'worker.log').read_text()[-3000:]}")
                time.sleep(0.5)
            seconds = time.perf_counter() - started
            peak_mb = memory_mb(worker.pid, "VmHWM")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()
        if job.status != ImportJob.Status.SUCCEEDED:
            raise SystemExit(f"the import failed: {job.error}")
    figures = {
        "file_mb": round(file_mb, 1),
        "records": job.records,
        "created": job.created,
        "seconds": round(seconds, 1),
        "records_per_s": round(job.records / seconds),
        "worker_idle_mb": round(idle_mb, 1),
        "worker_peak_mb": round(peak_mb, 1),
        "peak_over_file": round(peak_mb / file_mb, 3),
        "peak_over_limit": round(peak_mb / LIMIT_MB, 3),
        "limit_mb": LIMIT_MB,
        "under_limit": peak_mb < LIMIT_MB,
    }
    print(
        f"import of {file_mb:.0f} MB ({job.records:,} pairs) by a Celery worker: {seconds:.1f} s "
        f"({figures['records_per_s']:,} records/s); worker memory idle {idle_mb:.0f} MB, peak {peak_mb:.0f} MB = "
        f"{figures['peak_over_file']:.2f}x the file, {figures['peak_over_limit']:.2f}x the {LIMIT_MB} MB limit"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
