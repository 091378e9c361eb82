"""The fault drill: raters keep submitting while PostgreSQL restarts, a web worker is killed and the Celery worker
is killed in the middle of a training run. Nothing acknowledged may be lost or stored twice, service must come
back within seconds, the trainer must die with its worker, and the run must not stay "running".

Starts, on a fresh PostgreSQL database, the app under gunicorn (2 workers), a Celery worker on both queues (as
the Procfile runs it) and Celery beat (its stale-run and stale-import jobs every 5 s instead of every minute,
with a 10 s heartbeat timeout, so that a 60 s drill sees them act). R raters (threads, each with its own signed-in
session) loop "next task" then "submit", retrying a failed submit with the same client submission id until it
is acknowledged. A reward-model run on the demo project starts with them. Then, at 20%, 40% and 60% of the
drill: PostgreSQL restarts; one gunicorn worker gets SIGKILL; the Celery worker gets SIGKILL (and a new one
starts, under another name, 2 s later).

Prints what the raters were told against what the database holds, the longest time a rater went without an
answer, trainer processes left alive after their worker died, and runs still "running" at the end; the last
line is one JSON object: {acknowledged, stored, lost, duplicated, max_recovery_s, orphan_trainers, stuck_runs,
...}. Goal: 0 lost, 0 duplicated, recovery under 5 s, 0 orphans, 0 stuck. It needs a PostgreSQL server it may
create databases on and restart (``pg_ctlcluster``, as root): run it on a machine of its own.

    python bench/faults.py [--quick] [--raters 8] [--seconds 60]
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _postgres import DEFAULT_SERVER_URL, scratch_database  # noqa: E402
from rater_loop import Rater, free_port, seed, start_server  # noqa: E402

HEARTBEAT_TIMEOUT_S = 10
BEAT_EVERY_S = 5
SETTLE_S = 45  # after the drill, how long the beat job may take to fail the orphaned run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 raters for 30 s")
    parser.add_argument("--raters", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL URL that may create databases")
    args = parser.parse_args()
    if args.quick:
        args.raters, args.seconds = 4, 30.0
    return args


# --- processes -----------------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (a run's output folder names its trainer)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def start_celery(env: dict, log_dir: Path, name: str) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", "default,training", "--pool",
         "threads", "--concurrency", "2", "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip",
         "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_beat(env: dict, log_dir: Path) -> subprocess.Popen:
    log = open(log_dir / "beat.log", "w", encoding="utf-8")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--pidfile=",
         "--schedule", str(log_dir / "beat-schedule")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def restart_postgres() -> float:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, capture_output=True
    )
    return time.monotonic() - started


def time_to_empty(out_dir: str | None, since: float, figures: dict) -> None:
    """How long the run's trainer processes outlive their killed worker (they should die with it)."""
    while out_dir and processes_mentioning(out_dir) and time.monotonic() < since + SETTLE_S:
        time.sleep(0.2)
    figures["trainer_gone_after_s"] = round(time.monotonic() - since, 1)


# --- raters --------------------------------------------------------------------------------------------------


class Drill:
    """What the raters saw: acknowledged submissions, failed attempts, and the longest spell without an answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged: list[tuple[str, str]] = []  # (username, client submission id)
        self.refused: list[str] = []
        self.failed_attempts = 0
        self.max_outage_s = 0.0
        self.stop = threading.Event()
        self.deadline = float("inf")  # once stopped: how long a rater keeps resending an unacknowledged submit

    def outage(self, seconds: float) -> None:
        with self.lock:
            self.max_outage_s = max(self.max_outage_s, seconds)


def rater_loop(drill: Drill, port: int, slug: str, username: str) -> None:
    rater = None
    rng = random.Random(username)
    down_since: float | None = None
    pending: tuple[int, dict] | None = None  # a submission not yet acknowledged: resent as it was

    def call(path: str, payload: dict | None) -> tuple[int, bytes] | None:
        nonlocal rater, down_since
        try:
            if rater is None:
                rater = Rater(port, username)
            status, data, _ = rater.post_json(path, payload)
        except (OSError, http.client.HTTPException, SystemExit, KeyError, AttributeError):
            status, data = 0, b""
            rater = None  # a new connection (and session, if need be) next time
        if status == 0 or status >= 500:
            with drill.lock:
                drill.failed_attempts += 1
            if down_since is None:
                down_since = time.monotonic()
            time.sleep(0.05)
            return None
        if down_since is not None:
            drill.outage(time.monotonic() - down_since)
            down_since = None
        return status, data

    while not drill.stop.is_set() or pending is not None:
        if pending is None:
            answer = call(f"/api/v1/projects/{slug}/tasks/next", None)
            if answer is None:
                continue
            status, data = answer
            if status == 204:
                return
            if status != 200:
                drill.refused.append(f"next {status}: {data[:120]!r}")
                time.sleep(0.1)
                continue
            task = json.loads(data)
            ids = [response["id"] for response in task["responses"]]
            rng.shuffle(ids)
            pending = (task["task_id"], {"client_submission_id": uuid.uuid4().hex, "ranking": [[i] for i in ids]})
        task_id, payload = pending
        answer = call(f"/api/v1/tasks/{task_id}/judgements", payload)
        if answer is None:
            if drill.stop.is_set() and time.monotonic() > drill.deadline:
                return  # the server never came back: the submission stays unacknowledged
            continue
        status, data = answer
        if status in (200, 201):
            with drill.lock:
                drill.acknowledged.append((username, payload["client_submission_id"]))
        else:
            drill.refused.append(f"submit {status}: {data[:120]!r}")
        pending = None


# --- the drill -----------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    os.environ.update(
        VAR_DIR=str(work / "var"), ARTEFACTS_DIR=str(work / "artefacts"), CELERY_BROKER_URL="filesystem://localhost//",
        CELERY_BROKER_DIR=str(work / "broker"), TRAINING_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S),
    )  # fmt: skip
    shared = ("VAR_DIR", "ARTEFACTS_DIR", "CELERY_BROKER_URL", "CELERY_BROKER_DIR", "TRAINING_HEARTBEAT_TIMEOUT")
    with scratch_database(args.server_url, f"rlhf_bench_faults_{os.getpid()}") as base_env:
        env = {**base_env, **{key: os.environ[key] for key in shared}}
        results = run_drill(args, env, work)
    print(
        f"{args.raters} raters for {args.seconds:.0f} s: {results['acknowledged']} acknowledged, {results['stored']} "
        f"stored, {results['lost']} lost, {results['duplicated']} duplicated; longest outage "
        f"{results['max_recovery_s']} s ({results['failed_attempts']} failed attempts); PostgreSQL restart took "
        f"{results['postgres_restart_s']} s; trainer alive before the kill: {results['trainer_was_running']}, "
        f"gone {results.get('trainer_gone_after_s')} s after it, orphans at the end: {results['orphan_trainers']}; "
        f"stuck runs: {results['stuck_runs']} (the run {results['run_status']} "
        f"{results.get('run_failed_after_kill_s')} s after the kill: {results['run_error']!r})"
    )
    print(json.dumps(results))


def run_drill(args: argparse.Namespace, env: dict, work: Path) -> dict:
    from django.conf import settings
    from django.db import connections
    from django.db.models import Count
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from labeling import runs, services
    from labeling.management.commands.demo_setup import DEMO_DATA_DIR
    from labeling.models import Judgement, TrainingRun, User

    plan = seed({"drill": (args.raters, int(args.seconds * 200), "fifo")}, overlap=2, k=2)["drill"]
    fast = IntervalSchedule.objects.create(every=BEAT_EVERY_S, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task__endswith="_fail_stale_task").update(interval=fast)
    demo_rater = User.objects.create(username="demo-rater")
    demo = services.demo_project_ensure(data_dir=DEMO_DATA_DIR, members=[demo_rater]).project

    port = free_port()
    server = start_server(env, port, workers=2, threads=2)
    worker = start_celery(env, work, "drill1")
    beat = start_beat(env, work)
    replacement = None
    figures: dict = {}
    drill = Drill()
    try:
        time.sleep(5)  # the worker and beat start
        settings.CELERY_TRAINING_QUEUE = "training"
        run = runs.reward_run_start(project=demo, base_model="minilm-l6", epochs=3.0)
        threads = [
            threading.Thread(target=rater_loop, args=(drill, port, plan["slug"], name)) for name in plan["usernames"]
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()

        def at(share: float) -> None:
            time.sleep(max(0.0, started + share * args.seconds - time.monotonic()))

        at(0.2)
        figures["postgres_restart_s"] = round(restart_postgres(), 2)
        at(0.4)
        web_workers = children(server.pid)
        if web_workers:
            os.kill(web_workers[0], 9)
        figures["web_worker_killed"] = bool(web_workers)
        at(0.6)
        connections.close_all()  # this process's connection did not survive the restart
        run.refresh_from_db()
        out_dir = str(Path(settings.ARTEFACTS_DIR) / run.output_dir) if run.output_dir else None
        figures["trainer_was_running"] = bool(out_dir and processes_mentioning(out_dir))
        worker.kill()
        worker.wait()
        killed_at, killed_wall = time.monotonic(), time.time()
        threading.Thread(target=time_to_empty, args=(out_dir, killed_at, figures), daemon=True).start()
        time.sleep(2)
        replacement = start_celery(env, work, "drill2")
        at(1.0)
        drill.deadline = time.monotonic() + 30
        drill.stop.set()
        for thread in threads:
            thread.join()
        figures["rater_seconds"] = round(time.monotonic() - started, 1)
        # The beat job should fail the run whose worker died; give it the heartbeat timeout and some beats.
        while time.monotonic() < killed_at + SETTLE_S:
            run.refresh_from_db()
            if run.status != TrainingRun.Status.RUNNING:
                break
            time.sleep(1)
        if run.finished_at is not None:
            figures["run_failed_after_kill_s"] = round(run.finished_at.timestamp() - killed_wall, 1)
        figures["orphan_trainers"] = len(processes_mentioning(out_dir)) if out_dir else 0
    finally:
        for process in (replacement, beat, server, worker):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()

    run.refresh_from_db()
    judgements = Judgement.objects.filter(task__project__slug=plan["slug"])
    stored_keys = set(judgements.values_list("rater__username", "client_submission_id"))
    acknowledged = set(drill.acknowledged)
    duplicated = judgements.values("rater", "client_submission_id").annotate(n=Count("id")).filter(n__gt=1).count()
    duplicated += judgements.values("rater", "task").annotate(n=Count("id")).filter(n__gt=1).count()
    return {
        "acknowledged": len(drill.acknowledged),
        "stored": judgements.count(),
        "lost": len(acknowledged - stored_keys),
        "duplicated": duplicated + len(drill.acknowledged) - len(acknowledged),
        "max_recovery_s": round(drill.max_outage_s, 2),
        "orphan_trainers": figures["orphan_trainers"],
        "stuck_runs": TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).count(),
        "failed_attempts": drill.failed_attempts,
        "refused": len(drill.refused),
        "refused_examples": drill.refused[:3],
        "run_status": run.status,
        "run_error": run.error[:200],
        "raters": args.raters,
        "seconds": args.seconds,
        **figures,
    }


if __name__ == "__main__":
    main()
