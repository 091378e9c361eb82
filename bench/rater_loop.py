"""Raters in a loop against the real app: throughput, latency and integrity of the rater's calls.

Starts the app on PostgreSQL under gunicorn (a fresh database, dropped afterwards), warms it up with 200
submissions by 8 raters on a project of their own (not counted), then R simulated raters
(threads on loopback, each with its own logged-in session) judge tasks over the same HTTP calls the rater page
makes, until a fixed number of submissions is stored: "next task" once, then "submit" with ``?next=true``, whose
answer brings the next task (``--separate-next``: a next-task call before every submission, the page's loop
before it asked for both at once). Prints submissions per second, p50/p95/p99 latency of each call, and
integrity checks (stored = sent, no task over its overlap, no rater twice on a task). The last line is one JSON
object.

Each R runs once per task order (``--orders``, default fifo and uncertainty), on projects of its own: the
uncertainty project's tasks carry priorities, as the reward model's scoring job writes them, so that the lease
walks the priority index; the JSON gives each order's figures and their ratios to fifo's.

Against the limit: the same raters on the same server and connections call ``GET /api/v1/me`` (authenticated,
one database query), in turns with the loop (``--pairs`` chunks of each, so that both see the same load on a
shared machine), twice as many times as the loop submits. ``R*_vs_limit`` is the loop's submissions per second
as a share of half that rate (the issue's measure: a submission took two requests; target 0.6), the median over
the pairs; ``R*_requests_vs_limit`` is the loop's requests per second as a share of the whole rate, what one
call of the loop costs against the cheapest authenticated call.

    python bench/rater_loop.py            # R = 1, 8 and 32
    python bench/rater_loop.py --quick    # R = 8 on fewer submissions, under two minutes
"""

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _postgres import DEFAULT_SERVER_URL, scratch_database  # noqa: E402

PASSWORD = "bench-password-not-secret"
WARMUP = (8, 200)  # raters, submissions


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="R = 8 only, on fewer submissions")
    parser.add_argument("--raters", default="1,8,32", help="comma-separated R values (default 1,8,32)")
    parser.add_argument("--submissions", type=int, default=3000, help="submissions per R (default 3000)")
    parser.add_argument("--overlap", type=int, default=2, help="judgements wanted per task (default 2)")
    parser.add_argument("--k", type=int, default=4, help="responses per task (default 4)")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: one per core)")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker (default 2)")
    parser.add_argument("--orders", default="fifo,uncertainty", help="task orders to run side by side")
    parser.add_argument("--pairs", type=int, default=6, help="ceiling and loop chunks, taken in turns (default 6)")
    parser.add_argument(
        "--separate-next",
        action="store_true",
        help="the loop asks for the next task in a call of its own before each submission (as the page did)",
    )
    parser.add_argument(
        "--server-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL URL with rights to create databases",
    )
    args = parser.parse_args()
    if args.quick:
        args.raters, args.submissions = "8", 1000
    args.raters = [int(value) for value in args.raters.split(",")]
    args.orders = args.orders.split(",")
    args.workers = args.workers or (os.cpu_count() or 1)
    return args


# --- the database ------------------------------------------------------------------------------------------


def seed(rounds: dict[str, tuple[int, int, str]], overlap: int, k: int) -> dict[str, dict]:
    """One project per round (name: (raters, submissions, task order)) with enough tasks for it and its raters
    in it, and random priorities where the order reads them; everything in bulk."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from labeling.models import ComparisonTask, Project, Prompt, Response, TaskResponse, User

    raters_group = Group.objects.get(name="raters")
    password_hash = make_password(PASSWORD)
    plan = {}
    with transaction.atomic():
        for name, (r, submissions, order) in rounds.items():
            slug = f"bench-{name.lower()}"
            project = Project.objects.create(
                name=f"Bench {name}", slug=slug, overlap=overlap, responses_per_task=k, rate_enabled=False,
                task_order=order,
            )  # fmt: skip
            users = User.objects.bulk_create(
                User(username=f"{slug}-rater{i}", password=password_hash) for i in range(r)
            )
            raters_group.user_set.add(*users)
            project.members.add(*users)
            task_count = submissions // min(overlap, r) + 8 * r
            prompts = Prompt.objects.bulk_create(
                Prompt(project=project, messages=[{"role": "user", "content": f"Question {i}: why is the sky blue?"}])
                for i in range(task_count)
            )
            responses = Response.objects.bulk_create(
                Response(prompt=prompt, text=f"Answer {j} to question {prompt.pk}. **Rayleigh** scattering.")
                for prompt in prompts
                for j in range(k)
            )
            tasks = ComparisonTask.objects.bulk_create(
                ComparisonTask(
                    project=project,
                    prompt=prompt,
                    required_judgements=overlap,
                    priority=None if order == "fifo" else random.random(),
                )  # fmt: skip
                for prompt in prompts
            )
            TaskResponse.objects.bulk_create(
                TaskResponse(task=task, response=responses[index * k + j], position=j)
                for index, task in enumerate(tasks)
                for j in range(k)
            )
            plan[name] = {"slug": project.slug, "usernames": [user.username for user in users], "tasks": task_count}
    # The stored HTML, as the beat job fills it in within a minute of an import.
    from labeling.services import stored_html_fill

    stored_html_fill(limit=10**9)
    # Fresh planner statistics, as autovacuum keeps them on a live database: without them PostgreSQL plans
    # for empty tables.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return plan


def integrity(slug: str, sent: list[tuple[int, str]]) -> dict:
    """What the database holds against what the raters were told was stored."""
    from django.db.models import Count, F

    from labeling.models import ComparisonTask, Judgement

    judgements = Judgement.objects.filter(task__project__slug=slug)
    stored_ids = set(judgements.values_list("client_submission_id", flat=True))
    sent_ids = [client_id for _, client_id in sent]
    over = (
        ComparisonTask.objects.filter(project__slug=slug)
        .annotate(n=Count("judgements"))
        .filter(n__gt=F("required_judgements"))
        .count()
    )
    twice = judgements.values("task", "rater").annotate(n=Count("id")).filter(n__gt=1).count()
    result = {
        "stored": judgements.count(),
        "sent": len(sent_ids),
        "stored_equals_sent": judgements.count() == len(sent_ids) == len(set(sent_ids)) and stored_ids == set(sent_ids),
        "tasks_over_overlap": over,
        "rater_twice_on_a_task": twice,
    }
    result["ok"] = result["stored_equals_sent"] and over == 0 and twice == 0
    return result


# --- the server --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict, port: int, workers: int, threads: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
         "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not answer within 60 s")


# --- a simulated rater -------------------------------------------------------------------------------------


class Rater:
    """One browser session: log in, then next task / submit over a kept-alive connection."""

    def __init__(self, port: int, username: str) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}
        self.login(username)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = {**(headers or {}), "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle kept-alive connection: open a new one and send again.
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return response.status, data

    def login(self, username: str) -> None:
        status, page = self.request("GET", "/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        body = f"csrfmiddlewaretoken={token}&username={username}&password={PASSWORD}".encode()
        status, _ = self.request(
            "POST",
            "/login/",
            body,
            {"Content-Type": "application/x-www-form-urlencoded", "Referer": "http://127.0.0.1/"},
        )
        if status != 302:
            raise SystemExit(f"login of {username} failed with {status}")

    def post_json(self, path: str, payload: dict | None) -> tuple[int, bytes, float]:
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.cookies["csrftoken"]}
        started = time.perf_counter()
        status, data = self.request("POST", path, body, headers)
        return status, data, (time.perf_counter() - started) * 1000


def ceiling_round(raters: list[Rater], requests: int) -> dict:
    """The ceiling: the same raters, server and connections on ``GET /api/v1/me``, an authenticated endpoint that
    makes one database query, ``requests`` times in all."""
    lock = threading.Lock()
    state = {"claimed": 0, "errors": 0}

    def work(rater: Rater) -> None:
        while True:
            with lock:
                if state["claimed"] >= requests:
                    return
                state["claimed"] += 1
            status, _ = rater.request("GET", "/api/v1/me")
            if status != 200:
                with lock:
                    state["errors"] += 1

    elapsed = run_threads(work, raters)
    return {"requests": requests, "seconds": elapsed, "errors": state["errors"]}


def run_threads(work, raters: list[Rater]) -> float:
    """Run ``work(rater)`` in a thread per rater; the seconds until the last one ends."""
    threads = [threading.Thread(target=work, args=(rater,)) for rater in raters]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


class Loop:
    """The rater's loop on one project, run in chunks: the page's calls, "next task" once, then "submit" asking
    for the next task with the judgement (``?next=true``), or with ``separate_next`` the next-task call before
    every submission. What it sent and how long each call took add up over the chunks."""

    def __init__(self, slug: str, raters: list[Rater], separate_next: bool) -> None:
        self.slug, self.raters, self.separate_next = slug, raters, separate_next
        self.tasks: dict[int, dict | None] = {}  # the task each rater holds, by id(rater)
        self.done: set[int] = set()  # raters told that nothing is left
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.sent: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.seconds = 0.0

    def chunk(self, submissions: int) -> dict:
        """``submissions`` more submissions; their count, requests and seconds."""
        lock = threading.Lock()
        state = {"claimed": 0, "sent": 0, "requests": 0}

        def work(rater: Rater) -> None:
            rng = random.Random(hash(rater))
            key = id(rater)
            while key not in self.done:
                with lock:
                    if state["claimed"] >= submissions:
                        return
                    state["claimed"] += 1
                task = self.tasks.pop(key, None)
                if task is None:
                    status, data, ms = rater.post_json(f"/api/v1/projects/{self.slug}/tasks/next", None)
                    self.next_ms.append(ms)
                    with lock:
                        state["requests"] += 1
                    if status == 204:
                        self.done.add(key)
                        return
                    if status != 200:
                        self.errors.append(f"next: {status} {data[:200]!r}")
                        return
                    task = json.loads(data)
                ids = [response["id"] for response in task["responses"]]
                rng.shuffle(ids)
                client_id = uuid.uuid4().hex
                payload = {"client_submission_id": client_id, "ranking": [[i] for i in ids]}
                query = "" if self.separate_next else "?next=true"
                status, data, ms = rater.post_json(f"/api/v1/tasks/{task['task_id']}/judgements{query}", payload)
                self.submit_ms.append(ms)
                with lock:
                    state["requests"] += 1
                if status != 201:
                    self.errors.append(f"submit: {status} {data[:200]!r}")
                    return
                answer = json.loads(data)
                with lock:
                    self.sent.append((task["task_id"], client_id))
                    state["sent"] += 1
                if not self.separate_next:
                    if "next" in answer and answer["next"] is None:
                        self.done.add(key)
                    self.tasks[key] = answer.get("next")

        elapsed = run_threads(work, self.raters)
        self.seconds += elapsed
        return {"submissions": state["sent"], "requests": state["requests"], "seconds": elapsed}

    def result(self) -> dict:
        def percentiles(values: list[float]) -> dict:
            if len(values) < 2:
                return {"p50": None, "p95": None, "p99": None}
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}

        nexts, submits = percentiles(self.next_ms), percentiles(self.submit_ms)
        return {
            "raters": len(self.raters),
            "submissions": len(self.sent),
            "requests": len(self.next_ms) + len(self.submit_ms),
            "seconds": round(self.seconds, 2),
            "submissions_per_s": round(len(self.sent) / self.seconds, 1),
            "next_calls": len(self.next_ms),
            "next_p50_ms": nexts["p50"],
            "next_p95_ms": nexts["p95"],
            "next_p99_ms": nexts["p99"],
            "submit_p50_ms": submits["p50"],
            "submit_p95_ms": submits["p95"],
            "submit_p99_ms": submits["p99"],
            "errors": self.errors[:5],
            "integrity": integrity(self.slug, self.sent),
        }


def measured_against_the_ceiling(loop: Loop, submissions: int, pairs: int) -> dict:
    """The loop's submissions in ``pairs`` chunks, each right after a ceiling chunk of twice as many requests on
    the same raters and connections: the load of this shared machine drifts within seconds, and each pair sees
    the same. The limit of a chunk is half the ceiling's requests per second (a submission took two requests
    before the submit brought the next task); ``vs_limit`` is the median of the pairs' ratios."""
    ratios, request_ratios, ceilings = [], [], []
    for index in range(pairs):
        share = submissions // pairs + (1 if index < submissions % pairs else 0)
        ceiling = ceiling_round(loop.raters, 2 * share)
        part = loop.chunk(share)
        ceiling_rate = ceiling["requests"] / ceiling["seconds"]
        ceilings.append(ceiling_rate)
        ratios.append((part["submissions"] / part["seconds"]) / (ceiling_rate / 2))
        request_ratios.append((part["requests"] / part["seconds"]) / ceiling_rate)
    result = loop.result()
    result["ceiling_requests_per_s"] = round(statistics.median(ceilings), 1)
    result["vs_limit"] = round(statistics.median(ratios), 3)
    result["vs_limit_pairs"] = [round(ratio, 3) for ratio in ratios]
    result["requests_vs_limit"] = round(statistics.median(request_ratios), 3)
    return result


def round_name(r: int, order: str) -> str:
    return f"R{r}" if order == "fifo" else f"R{r}_{order}"


def main() -> None:
    args = parse_args()
    with scratch_database(args.server_url, f"rlhf_bench_{os.getpid()}") as env:
        rounds = {round_name(r, order): (r, args.submissions, order) for r in args.raters for order in args.orders}
        plan = seed({"warmup": (*WARMUP, "fifo"), **rounds}, args.overlap, args.k)
        port = free_port()
        server = start_server(env, port, args.workers, args.threads)
        loop_name = "next task, then submit" if args.separate_next else "submit bringing the next task"
        try:
            print(f"gunicorn {args.workers}x{args.threads} threads on PostgreSQL; K={args.k}, overlap {args.overlap}; "
                  f"the loop: {loop_name}")  # fmt: skip
            # A server that has just started compiles, connects and prepares on its first requests: warm it up
            # on a project of its own, as a server that has been up for a while is. Not counted; checked.
            warmup = Loop(plan["warmup"]["slug"], raters_of(port, plan["warmup"]), args.separate_next)
            warmup.chunk(WARMUP[1])
            ceiling_round(warmup.raters, WARMUP[1])
            checks = warmup.result()
            if not checks["integrity"]["ok"] or checks["errors"]:
                raise SystemExit(f"the warm-up round failed: {checks['integrity']} {checks['errors']}")
            results = {}
            for r, order in ((r, order) for r in args.raters for order in args.orders):
                name = round_name(r, order)
                loop = Loop(plan[name]["slug"], raters_of(port, plan[name]), args.separate_next)
                result = results[name] = measured_against_the_ceiling(loop, args.submissions, args.pairs)
                if order == args.orders[0]:
                    results[f"R{r}_ceiling"] = {"requests_per_s": result["ceiling_requests_per_s"]}
                results[f"{name}_vs_limit"] = result["vs_limit"]
                results[f"{name}_requests_vs_limit"] = result["requests_vs_limit"]
                print(
                    f"R={r:>2} {order:>12}: {result['submissions']} submissions in {result['seconds']} s = "
                    f"{result['submissions_per_s']}/s ({result['requests']} requests); next p50/p95/p99 "
                    f"{result['next_p50_ms']}/{result['next_p95_ms']}/{result['next_p99_ms']} ms "
                    f"({result['next_calls']} calls); submit p50/p95/p99 {result['submit_p50_ms']}/"
                    f"{result['submit_p95_ms']}/{result['submit_p99_ms']} ms; ceiling GET /api/v1/me "
                    f"{result['ceiling_requests_per_s']}/s; {result['vs_limit']:.0%} of the limit (pairs "
                    f"{result['vs_limit_pairs']}), requests at {result['requests_vs_limit']:.0%} of the ceiling; "
                    f"integrity {'ok' if result['integrity']['ok'] else 'BROKEN'} {result['integrity']}"
                    + (f"; errors {result['errors']}" if result["errors"] else "")
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    for r in args.raters:
        fifo = results.get(round_name(r, "fifo"))
        for order in args.orders:
            if order != "fifo" and fifo:
                other = results[round_name(r, order)]
                results[f"R{r}_{order}_vs_fifo"] = {
                    "throughput": round(other["submissions_per_s"] / fifo["submissions_per_s"], 3),
                    "next_p50": round(other["next_p50_ms"] / fifo["next_p50_ms"], 3),
                    "next_p95": round(other["next_p95_ms"] / fifo["next_p95_ms"], 3),
                    "submit_p50": round(other["submit_p50_ms"] / fifo["submit_p50_ms"], 3),
                    "submit_p95": round(other["submit_p95_ms"] / fifo["submit_p95_ms"], 3),
                }
                print(f"R={r:>2} {order} / fifo: {results[f'R{r}_{order}_vs_fifo']}")
    results["loop"] = "separate_next" if args.separate_next else "submit_with_next"
    results["integrity_ok"] = all(
        value["integrity"]["ok"] and not value["errors"]
        for key, value in results.items()
        if key.startswith("R") and isinstance(value, dict) and "integrity" in value
    )
    print(json.dumps(results))


def raters_of(port: int, project: dict) -> list[Rater]:
    return [Rater(port, username) for username in project["usernames"]]


if __name__ == "__main__":
    main()
