"""The rater audit at scale, on PostgreSQL: a full refresh of a project's rater figures, the dashboard that reads
them, and how well the flags find the raters known to be bad.

Generates, in a fresh PostgreSQL database, a project of two-response tasks, each judged by five of 200 raters
(1,000,000 judgements; `--quick`: 100,000). The better response of each task is known, and is the longer one
in 60% of tasks. 180 raters are careful (they choose the better response 80% of the time); a known 10% are
bad: 7 choose at random, 7 always the response shown first, 6 always the longer one. Then, in a process of its
own (so that its peak memory is its own), the beat job's full refresh of the project's audit; then 200 requests
for the raters dashboard as an admin, sorted and filtered as a person would (the p99 latency); then the flags
against the known bad raters (recall and precision).

Targets, each printed with its ratio to the limit: refresh under 30 s and 500 MB, dashboard p99 under 200 ms,
recall and precision of the flags at least 0.9.

    python bench/quality.py [--quick]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _postgres import DEFAULT_SERVER_URL, scratch_database  # noqa: E402

RATERS = 200
PER_TASK = 5
KINDS = {"random": range(180, 187), "first": range(187, 194), "longer": range(194, 200)}  # rater index: bad ones
LIMITS = {"refresh_s": 30.0, "refresh_peak_mb": 500.0, "dashboard_p99_ms": 200.0}
GOALS = {"bad_rater_recall": 0.9, "bad_rater_precision": 0.9}
DASHBOARD_REQUESTS = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 judgements instead of 1,000,000")
    parser.add_argument("--judgements", type=int, default=1_000_000)
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL, help="a PostgreSQL URL that may create databases")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.judgements = 100_000
    return args


# Raters are users bench-rater-0 .. 199 (ids in :raters, by index). Task i's better response is the one at
# position 0; its judges are raters (i * 5 + j) % 200, j = 0..4, so every rater judges tasks of every kind.
GENERATE = """
SELECT setseed(0.42);

INSERT INTO labeling_prompt (project_id, messages, source, external_id, content_hash, metadata, created_at)
SELECT %(project)s,
       jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || i || ': which is better?')),
       'bench', 'q-' || i, md5(i::text), '{}'::jsonb, now()
FROM generate_series(1, %(tasks)s) AS i;

CREATE TEMP TABLE bench_task AS
SELECT p.id AS prompt_id, random() < 0.6 AS better_is_longer,
       20 + floor(random() * 200)::int AS short_length, 240 + floor(random() * 700)::int AS long_length
FROM labeling_prompt p WHERE p.project_id = %(project)s;

INSERT INTO labeling_response (prompt_id, text, origin, metadata, created_at)
SELECT b.prompt_id, repeat(CASE WHEN r = 0 THEN 'g' ELSE 'b' END,
           CASE WHEN (r = 0) = b.better_is_longer THEN b.long_length ELSE b.short_length END),
       'model-' || r, '{}'::jsonb, now()
FROM bench_task b CROSS JOIN generate_series(0, 1) AS r
ORDER BY b.prompt_id, r;

INSERT INTO labeling_comparisontask
    (project_id, prompt_id, required_judgements, status, is_gold, created_at, updated_at)
SELECT %(project)s, p.id, %(per_task)s, 'complete', false, now(), now()
FROM labeling_prompt p WHERE p.project_id = %(project)s ORDER BY p.id;

INSERT INTO labeling_taskresponse (task_id, response_id, position)
SELECT t.id, r.id, row_number() OVER (PARTITION BY t.id ORDER BY r.id) - 1
FROM labeling_comparisontask t JOIN labeling_response r ON r.prompt_id = t.prompt_id
WHERE t.project_id = %(project)s;

CREATE TEMP TABLE bench_pick AS
SELECT t.id AS task_id, t.rn, j, ids[1] AS better, ids[2] AS worse,
       CASE WHEN b.better_is_longer THEN ids[1] ELSE ids[2] END AS longer,
       (%(raters)s)[((t.rn * %(per_task)s + j) %% %(rater_count)s) + 1] AS rater_id,
       ((t.rn * %(per_task)s + j) %% %(rater_count)s) AS rater_index,
       random() < 0.5 AS better_shown_first, random() AS draw, 20 + random() * 100 AS seconds
FROM (
    SELECT t.id, t.prompt_id, row_number() OVER (ORDER BY t.id) - 1 AS rn,
           array_agg(tr.response_id ORDER BY tr.position) AS ids
    FROM labeling_comparisontask t JOIN labeling_taskresponse tr ON tr.task_id = t.id
    WHERE t.project_id = %(project)s GROUP BY t.id
) AS t JOIN bench_task b ON b.prompt_id = t.prompt_id CROSS JOIN generate_series(0, %(per_task)s - 1) AS j;

INSERT INTO labeling_judgement (task_id, rater_id, source, origin, ranking, margin, all_bad, likert, flags,
                                rationale, seconds_spent, shown_order, client_submission_id, probability,
                                gold_score, rater_paused, created_at)
SELECT task_id, rater_id, 'human', '', jsonb_build_array(jsonb_build_array(winner), jsonb_build_array(loser)),
       NULL, false, '{}'::jsonb, '{}'::jsonb, '', seconds,
       CASE WHEN better_shown_first THEN jsonb_build_array(better, worse) ELSE jsonb_build_array(worse, better) END,
       'bench-' || task_id, NULL, NULL, false, now() - (rn %% 84) * interval '1 day'
FROM (
    SELECT *, CASE WHEN winner = better THEN worse ELSE better END AS loser FROM (
        SELECT *, CASE
            WHEN rater_index BETWEEN %(random_from)s AND %(random_to)s THEN
                CASE WHEN draw < 0.5 THEN better ELSE worse END
            WHEN rater_index BETWEEN %(first_from)s AND %(first_to)s THEN
                CASE WHEN better_shown_first THEN better ELSE worse END
            WHEN rater_index BETWEEN %(longer_from)s AND %(longer_to)s THEN longer
            ELSE CASE WHEN draw < 0.8 THEN better ELSE worse END
        END AS winner FROM bench_pick
    ) AS chosen
) AS judged;
ANALYZE;
"""


def generate(judgements: int) -> tuple[int, dict[str, str]]:
    """The project's id, and each bad rater's username with their kind."""
    from django.db import connection

    from labeling.models import Project, User

    project = Project.objects.create(name="Quality bench", slug="quality-bench", responses_per_task=2)
    raters = User.objects.bulk_create([User(username=f"bench-rater-{index}") for index in range(RATERS)])
    project.members.set(raters)
    params = {
        "project": project.pk,
        "tasks": judgements // PER_TASK,
        "per_task": PER_TASK,
        "rater_count": RATERS,
        "raters": [rater.pk for rater in raters],
        **{f"{kind}_from": indices.start for kind, indices in KINDS.items()},
        **{f"{kind}_to": indices.stop - 1 for kind, indices in KINDS.items()},
    }
    with connection.cursor() as cursor:
        for statement in GENERATE.split(";\n"):
            if statement.strip():
                cursor.execute(statement, params)
    bad = {f"bench-rater-{index}": kind for kind, indices in KINDS.items() for index in indices}
    return project.pk, bad


def child_refresh(project_id: int) -> dict:
    from labeling import services
    from labeling.models import Project

    project = Project.objects.get(pk=project_id)
    started = time.perf_counter()
    raters = services.rater_stats_refresh(project=project)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes
    return {"refresh_s": round(seconds, 2), "refresh_peak_mb": round(peak, 1), "raters": raters}


def dashboard_latencies(project_id: int) -> list[float]:
    """Milliseconds per request for the raters dashboard as an admin, sorted and filtered in turn."""
    from django.test import Client
    from django.urls import reverse

    from labeling.models import User

    admin = User.objects.create_superuser("bench-admin", "admin@example.com", "bench-password")
    client = Client(HTTP_HOST="127.0.0.1")  # a host the settings allow
    client.force_login(admin)
    url = reverse("admin:labeling_project_raters", args=[project_id])
    views = [{}, {"o": "-consensus"}, {"o": "position"}, {"flagged": "1"}, {"q": "rater-1"}, {"p": "2"}]
    timings = []
    for number in range(DASHBOARD_REQUESTS):
        started = time.perf_counter()
        response = client.get(url, views[number % len(views)])
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"the dashboard answered {response.status_code}")
    return timings


def main() -> None:
    args = parse_args()
    if args.child:
        import django

        django.setup()
        print(json.dumps(child_refresh(args.project_id)))
        return

    with scratch_database(args.server_url, f"rlhf_bench_quality_{os.getpid()}") as env:
        started = time.perf_counter()
        project_id, bad = generate(args.judgements)
        print(f"generated {args.judgements} judgements by {RATERS} raters in {time.perf_counter() - started:.1f} s")
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--project-id", str(project_id)],
            cwd=ROOT, env={**env, "DEBUG": "false"}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            raise SystemExit(f"the refresh failed:\n{child.stderr[-3000:]}")
        results = json.loads(child.stdout.strip().splitlines()[-1])
        seconds, peak = results["refresh_s"], results["refresh_peak_mb"]
        print(f"full refresh: {results['raters']} raters in {seconds} s, peak {peak} MB")

        timings = sorted(dashboard_latencies(project_id))
        results["dashboard_p50_ms"] = round(statistics.median(timings), 1)
        results["dashboard_p99_ms"] = round(timings[int(len(timings) * 0.99) - 1], 1)
        p50, p99 = results["dashboard_p50_ms"], results["dashboard_p99_ms"]
        print(f"dashboard: {len(timings)} requests, p50 {p50} ms, p99 {p99} ms")

        from labeling.models import RaterStats

        flagged = set(
            RaterStats.objects.filter(project_id=project_id, flag_count__gt=0).values_list("rater__username", flat=True)
        )
        found = flagged & set(bad)
        results["bad_rater_recall"] = round(len(found) / len(bad), 3)
        results["bad_rater_precision"] = round(len(found) / len(flagged), 3) if flagged else 0.0
        for kind in KINDS:
            of_kind = {name for name, value in bad.items() if value == kind}
            print(f"  {kind:7} raters flagged: {len(of_kind & flagged)} of {len(of_kind)}")
        print(f"  careful raters flagged: {len(flagged - set(bad))} of {RATERS - len(bad)}")
        for name, limit in LIMITS.items():
            results[f"{name}_ratio_to_limit"] = round(results[name] / limit, 3)
            print(f"{name}: {results[name]} (limit {limit}, ratio {results[f'{name}_ratio_to_limit']})")
        for name, goal in GOALS.items():
            results[f"{name}_ratio_to_goal"] = round(results[name] / goal, 3)
            print(f"{name}: {results[name]} (goal at least {goal}, ratio {results[f'{name}_ratio_to_goal']})")
        results["judgements"] = args.judgements
        results["met"] = all(results[name] < limit for name, limit in LIMITS.items()) and all(
            results[name] >= goal for name, goal in GOALS.items()
        )
        print(json.dumps(results))


if __name__ == "__main__":
    main()
