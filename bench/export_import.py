"""Exports of a big project and a big import, on PostgreSQL, through the code paths the API, the admin and
the commands use.

Generates a project with N judgements (K = 4 rankings, four raters' worth per task) directly in a fresh
PostgreSQL database, then, each in a process of its own so that its peak memory can be read, exports it as
`preference` and `ranking`, to JSONL and to Parquet, and imports 100,000 prompts with 4 responses each
(`--quick`: 100,000 judgements and 10,000 prompts). Prints rows per second and the peak memory of each
exporting process; the last line is one JSON object.

Targets on a 2-core machine: the export of 1M judgements under 60 s with peak memory under 500 MB; the
import of 100k prompts with 4 responses under 20 s.

Against the limit: each export kind is also written by PostgreSQL itself, ``COPY (a SELECT of the same rows and
texts) TO STDOUT`` (checked to give as many rows), and the import's rows go in by ``COPY FROM`` (the file parsed
beforehand); ``*_vs_limit`` is the export's or the import's rate as a share of COPY's (targets: exports 0.3,
the import 0.2).

    python bench/export_import.py [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _postgres import DEFAULT_SERVER_URL, scratch_database  # noqa: E402

K = 4
JUDGEMENTS_PER_TASK = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 judgements and 10,000 imported prompts")
    parser.add_argument("--judgements", type=int, default=1_000_000)
    parser.add_argument("--import-prompts", type=int, default=100_000)
    parser.add_argument(
        "--server-url",
        default=DEFAULT_SERVER_URL,
        help="a PostgreSQL URL with rights to create databases",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "export:<kind>:<format>" or "import:<file>"
    parser.add_argument("--project-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.judgements, args.import_prompts = 100_000, 10_000
    return args


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


GENERATE = """
INSERT INTO labeling_prompt (project_id, messages, source, external_id, content_hash, metadata, created_at)
SELECT %(project)s,
       jsonb_build_array(jsonb_build_object('role', 'user', 'content',
           'Question ' || i || ': explain why the sky looks blue at noon and red at sunset.')),
       'bench', 'q-' || i, md5(i::text), '{}'::jsonb, now()
FROM generate_series(1, %(tasks)s) AS i;

INSERT INTO labeling_response (prompt_id, text, origin, metadata, created_at)
SELECT p.id, 'Answer ' || r || ' to prompt ' || p.id || ': sunlight scatters off air molecules, and blue '
       || 'light scatters the most; at sunset the light crosses more air, so mostly red light is left.',
       'model-' || r, '{}'::jsonb, now()
FROM labeling_prompt p CROSS JOIN generate_series(1, %(k)s) AS r
WHERE p.project_id = %(project)s
ORDER BY p.id, r;

INSERT INTO labeling_comparisontask
    (project_id, prompt_id, required_judgements, status, is_gold, created_at, updated_at)
SELECT %(project)s, p.id, %(per_task)s, 'complete', false, now(), now()
FROM labeling_prompt p WHERE p.project_id = %(project)s ORDER BY p.id;

INSERT INTO labeling_taskresponse (task_id, response_id, position)
SELECT t.id, r.id, row_number() OVER (PARTITION BY t.id ORDER BY r.id) - 1
FROM labeling_comparisontask t JOIN labeling_response r ON r.prompt_id = t.prompt_id
WHERE t.project_id = %(project)s;

INSERT INTO labeling_judgement (task_id, rater_id, source, origin, ranking, margin, all_bad, likert, flags,
                                rationale, seconds_spent, shown_order, client_submission_id, probability, created_at)
SELECT t.id, NULL, 'human', 'bench',
       CASE j %% 2
         WHEN 0 THEN jsonb_build_array(
             jsonb_build_array(ids[1]), jsonb_build_array(ids[2], ids[3]), jsonb_build_array(ids[4]))
         ELSE jsonb_build_array(
             jsonb_build_array(ids[4]), jsonb_build_array(ids[3]), jsonb_build_array(ids[1]), jsonb_build_array(ids[2]))
       END,
       NULL, false, '{}'::jsonb, '{}'::jsonb, '', 12.5, to_jsonb(ids), t.id || '-' || j, NULL, now()
FROM (
    SELECT t.id, array_agg(tr.response_id ORDER BY tr.position) AS ids
    FROM labeling_comparisontask t JOIN labeling_taskresponse tr ON tr.task_id = t.id
    WHERE t.project_id = %(project)s GROUP BY t.id
) AS t CROSS JOIN generate_series(1, %(per_task)s) AS j;
ANALYZE;
"""


def generate(judgements: int) -> int:
    from django.db import connection

    from labeling.models import Project

    project = Project.objects.create(name="Export bench", slug="export-bench", responses_per_task=K)
    tasks = judgements // JUDGEMENTS_PER_TASK
    with connection.cursor() as cursor:
        for statement in GENERATE.split(";\n"):
            if statement.strip():
                cursor.execute(
                    statement, {"project": project.pk, "tasks": tasks, "k": K, "per_task": JUDGEMENTS_PER_TASK}
                )
    return project.pk


def child_export(kind: str, file_format: str, project_id: int) -> dict:
    from labeling import exporters, selectors

    started = time.perf_counter()
    with tempfile.TemporaryFile() as stream:
        stats = exporters.write_export(kind, file_format, selectors.ExportFilter(project_id=project_id), stream)
        size = stream.tell()
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "judgements": stats.judgements,
        "rows": stats.rows,
        "rows_per_s": round(stats.rows / seconds),
        "judgements_per_s": round(stats.judgements / seconds),
        "bytes": size,
        "peak_mb": round(peak_mb(), 1),
    }


# The limit of each export: PostgreSQL writing the same rows, with the same texts, as COPY's text format in one
# statement (no Python, no JSON or Parquet encoding). One row per judgement for "ranking" (prompt, the
# responses' texts in order, ranking, margin, labels, time); one per ordered pair for "preference" (prompt,
# chosen text, rejected text, margin), pairs drawn from the ranking's groups as the exporter draws them.
COPY_EXPORT = {
    "ranking": """
        SELECT j.id, p.messages,
               (SELECT jsonb_agg(r.text ORDER BY tr.position) FROM labeling_taskresponse tr
                JOIN labeling_response r ON r.id = tr.response_id WHERE tr.task_id = t.id),
               j.ranking, j.margin, j.all_bad, j.likert, j.flags, j.probability, j.created_at
        FROM labeling_judgement j JOIN labeling_comparisontask t ON t.id = j.task_id
        JOIN labeling_prompt p ON p.id = t.prompt_id
        WHERE t.project_id = %(project)s ORDER BY j.task_id, j.id
    """,
    "preference": """
        SELECT p.messages, winner.text, loser.text, j.margin
        FROM labeling_judgement j JOIN labeling_comparisontask t ON t.id = j.task_id
        JOIN labeling_prompt p ON p.id = t.prompt_id
        CROSS JOIN LATERAL jsonb_array_elements(j.ranking) WITH ORDINALITY AS upper_group(ids, place)
        CROSS JOIN LATERAL jsonb_array_elements(j.ranking) WITH ORDINALITY AS lower_group(ids, place)
        CROSS JOIN LATERAL jsonb_array_elements_text(upper_group.ids) AS w(id)
        CROSS JOIN LATERAL jsonb_array_elements_text(lower_group.ids) AS l(id)
        JOIN labeling_response winner ON winner.id = w.id::bigint
        JOIN labeling_response loser ON loser.id = l.id::bigint
        WHERE t.project_id = %(project)s AND upper_group.place < lower_group.place ORDER BY j.task_id, j.id
    """,
}


def child_copy_export(kind: str, project_id: int) -> dict:
    """COPY (the export's rows) TO STDOUT into a file: the export's limit."""
    from django.db import connection

    started = time.perf_counter()
    rows = 0
    with tempfile.TemporaryFile() as stream, connection.cursor() as cursor:
        sql = COPY_EXPORT[kind].replace("%(project)s", str(int(project_id)))  # COPY takes no parameters
        with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT") as copy:
            for data in copy:
                stream.write(data)
                rows += bytes(data).count(b"\n")
        size = stream.tell()
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds), "bytes": size}


PROMPT_COLUMNS = "project_id, messages, source, external_id, content_hash, metadata, created_at"
TASK_COLUMNS = "project_id, prompt_id, required_judgements, status, is_gold, created_at, updated_at"


def child_copy_import(path: str) -> dict:
    """COPY FROM of the rows the import writes for the same file (its prompts, responses, tasks and the tasks'
    responses, into the same tables with their indexes), the file parsed beforehand: the import's limit."""
    import hashlib

    from django.db import connection, transaction

    from labeling import services

    with open(path, encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    project = services.project_create(name="Import limit", slug=f"import-limit-{os.getpid()}")
    now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())

    def copy(cursor, table: str, columns: str, rows, ids: bool = True) -> list[int]:
        """The rows into ``table``, and (``ids``) the ids they got, in order."""
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608 (a table name of ours)
        above = cursor.fetchone()[0]
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as writer:
            for row in rows:
                writer.write_row(row)
        if not ids:
            return []
        cursor.execute(f"SELECT id FROM {table} WHERE id > %s ORDER BY id", [above])  # noqa: S608
        return [row[0] for row in cursor.fetchall()]

    prompt_rows = (
        (project.pk, json.dumps([{"role": "user", "content": record["prompt"]}]), "", record["id"],
         hashlib.sha256(record["prompt"].encode()).hexdigest(), "{}", now)
        for record in records
    )  # fmt: skip
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        prompts = copy(cursor, "labeling_prompt", PROMPT_COLUMNS, prompt_rows)
        response_rows = (
            (prompt_id, text, "imported", "{}", now)
            for prompt_id, record in zip(prompts, records, strict=True)
            for text in record["responses"]
        )
        responses = copy(cursor, "labeling_response", "prompt_id, text, origin, metadata, created_at", response_rows)
        task_rows = ((project.pk, prompt_id, 1, "open", False, now, now) for prompt_id in prompts)
        tasks = copy(cursor, "labeling_comparisontask", TASK_COLUMNS, task_rows)
        slot_rows = (
            (task_id, responses[index * K + position], position)
            for index, task_id in enumerate(tasks)
            for position in range(K)
        )
        copy(cursor, "labeling_taskresponse", "task_id, response_id, position", slot_rows, ids=False)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "records": len(records), "records_per_s": round(len(records) / seconds)}


def child_import(path: str) -> dict:
    from labeling import services

    project = services.project_create(name="Import bench", slug=f"import-bench-{os.getpid()}")
    started = time.perf_counter()
    with open(path, "rb") as source:
        result = services.dataset_import_file(project=project, source=source, name=Path(path).name)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "records": result.records,
        "records_per_s": round(result.records / seconds),
        "created": result.created,
        "peak_mb": round(peak_mb(), 1),
    }


def run_child(env: dict, role: str, project_id: int) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", role, "--project-id", str(project_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{role} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        import django

        django.setup()
        role, _, detail = args.child.partition(":")
        if role == "export":
            kind, file_format = detail.split(":")
            print(json.dumps(child_export(kind, file_format, project_id=args.project_id)))
        elif role == "copy":
            print(json.dumps(child_copy_export(detail, project_id=args.project_id)))
        elif role == "copy-import":
            print(json.dumps(child_copy_import(detail)))
        else:
            print(json.dumps(child_import(detail)))
        return

    with scratch_database(args.server_url, f"rlhf_bench_io_{os.getpid()}") as env:
        results: dict = {}
        started = time.perf_counter()
        project_id = generate(args.judgements)
        print(f"generated {args.judgements} judgements (K={K}) in {time.perf_counter() - started:.1f} s")
        for kind in ("preference", "ranking"):
            limit = run_child(env, f"copy:{kind}", project_id)
            results[f"copy_{kind}"] = limit
            print(
                f"COPY {kind:10} (the limit): {limit['rows']} rows, {limit['seconds']} s, {limit['rows_per_s']} rows/s"
            )
            for file_format in ("jsonl", "parquet"):
                figures = run_child(env, f"export:{kind}:{file_format}", project_id)
                results[f"export_{kind}_{file_format}"] = figures
                results[f"export_{kind}_{file_format}_rows_per_s"] = figures["rows_per_s"]
                if figures["rows"] != limit["rows"]:
                    raise SystemExit(f"COPY wrote {limit['rows']} {kind} rows, the export {figures['rows']}")
                figures["vs_limit"] = round(figures["rows_per_s"] / limit["rows_per_s"], 3)
                results[f"export_{kind}_{file_format}_vs_limit"] = figures["vs_limit"]
                print(
                    f"export {kind:10} {file_format:7}: {figures['judgements']} judgements -> {figures['rows']} rows "
                    f"in {figures['seconds']} s ({figures['rows_per_s']} rows/s, {figures['judgements_per_s']} "
                    f"judgements/s), peak {figures['peak_mb']} MB; {figures['vs_limit']:.0%} of COPY's rate"
                )
        results["export_peak_mb"] = max(
            value["peak_mb"] for key, value in results.items() if key.startswith("export_") and isinstance(value, dict)
        )
        results["export_max_seconds"] = max(
            value["seconds"] for key, value in results.items() if key.startswith("export_") and isinstance(value, dict)
        )

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as source:
            for index in range(args.import_prompts):
                source.write(
                    json.dumps(
                        {
                            "id": f"import-{index}",
                            "prompt": f"Imported question {index}: what makes a good answer?",
                            "responses": [f"Candidate answer {r} to question {index}." for r in range(K)],
                        }
                    )
                    + "\n"
                )
        try:
            limit = run_child(env, f"copy-import:{source.name}", 0)
            figures = run_child(env, f"import:{source.name}", 0)
        finally:
            os.unlink(source.name)
        results["copy_import"] = limit
        figures["vs_limit"] = round(figures["records_per_s"] / limit["records_per_s"], 3)
        results["import_vs_limit"] = figures["vs_limit"]
        print(f"COPY FROM of the same rows (the limit): {limit['seconds']} s ({limit['records_per_s']} records/s)")
        results["import"] = figures
        results["import_records_per_s"] = figures["records_per_s"]
        print(
            f"import of {figures['records']} prompts with {K} responses: {figures['seconds']} s "
            f"({figures['records_per_s']} records/s), created {figures['created']}, peak {figures['peak_mb']} MB; "
            f"{figures['vs_limit']:.0%} of COPY's rate"
        )
        results["targets"] = {
            "export_under_60_s": results["export_max_seconds"] < 60 * args.judgements / 1_000_000,
            "export_peak_under_500_mb": results["export_peak_mb"] < 500,
            "import_under_20_s": figures["seconds"] < 20 * args.import_prompts / 100_000,
        }
        results["judgements"] = args.judgements
        results["import_prompts"] = args.import_prompts
    print(json.dumps(results))


if __name__ == "__main__":
    main()
