"""``studio``: RLHF Studio's common admin jobs from a shell, on the API (``STUDIO_URL``, ``STUDIO_TOKEN``).

    studio projects
    studio import SLUG FILE                 # waits for the import, with a progress bar
    studio export SLUG KIND -o FILE [--format parquet] [--since ...]
    studio snapshot SLUG KIND [--format parquet]
    studio run SLUG KIND [--set name=value ...] [--follow]
    studio follow RUN_ID                    # a progress bar to the run's end
    studio cancel RUN_ID
    studio models SLUG [--kind policy]
    studio make-current MODEL_ID
    studio leaderboard SLUG [--judge ai]

A failure prints ``error: ...`` (with the fields the server named) and exits 1; a run that ends failed exits 1
too, so that a script can chain commands with ``&&``."""

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm import tqdm

from studio_client.client import Client, Run, StudioError


def _value(text: str):
    """A ``--set`` value: JSON where it parses (numbers, true/false, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _settings(pairs: list[str]) -> dict:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise StudioError(0, f"--set takes name=value, not '{pair}'.")
        settings[name.strip()] = _value(value)
    return settings


def _table(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> str:
    cells = [[str(row.get(column, "")) if row.get(column) is not None else "-" for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[index]) for line in cells)]) for index, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def follow(client: Client, run_id: int, out=sys.stderr) -> Run:
    """The run's phase and progress until it ends: a progress bar on a terminal, else a line each time the status,
    the phase or the tenth of the way changes (for logs). Returns the ended run."""

    def state(run: Run) -> str:
        eta = run.get("eta_s")
        return f"{run['status']}, {run.get('phase') or '-'}" + (f", {eta:.0f} s left" if eta else "")

    if not out.isatty():
        seen: set[tuple] = set()

        def line(run: Run) -> None:
            percent = round(100 * float(run.get("progress") or 0))
            key = (run["status"], run.get("phase"), percent // 10)
            if key not in seen:
                seen.add(key)
                print(f"run {run_id} {run.get('kind', '')}: {percent}% {state(run)}", file=out, flush=True)

        return client.wait_for_run(run_id, on_progress=line)
    with tqdm(total=100, unit="%", file=out, bar_format="{l_bar}{bar}| {postfix}") as bar:

        def show(run: Run) -> None:
            bar.n = round(100 * float(run.get("progress") or 0), 1)
            bar.set_description(f"run {run_id} {run.get('kind', '')}")
            bar.set_postfix_str(state(run))

        return client.wait_for_run(run_id, on_progress=show)


def _ended(run: Run) -> int:
    if run["status"] == "succeeded":
        version = f", model version {run['model_version']}" if run.get("model_version") else ""
        print(f"run {run['id']} succeeded{version}")
        return 0
    print(f"run {run['id']} {run['status']}: {run.get('error') or ''}".rstrip(": "))
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", help="the server (default: STUDIO_URL)")
    parser.add_argument("--token", help="a staff account's API token (default: STUDIO_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("projects", help="list the projects")
    command = commands.add_parser("import", help="import a JSONL, CSV or Parquet file and wait for it")
    command.add_argument("slug")
    command.add_argument("file")
    command.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv", "parquet"])
    command.add_argument("--kind", default="auto")
    command = commands.add_parser("export", help="export a dataset to a file")
    command.add_argument("slug")
    command.add_argument("kind", help="preference, ranking, consensus, sft, hh or prompts")
    command.add_argument("-o", "--output", required=True)
    command.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    for name in ("since", "until", "source", "gold", "eval"):
        command.add_argument(f"--{name}")
    command = commands.add_parser("snapshot", help="freeze an export as a snapshot")
    command.add_argument("slug")
    command.add_argument("kind")
    command.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    command = commands.add_parser("run", help="start a run (and --follow it to its end)")
    command.add_argument("slug")
    command.add_argument("kind", help="reward, sft, dpo, ppo, generate, evaluate, score, critique, ai_feedback")
    command.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting (repeatable)")
    command.add_argument("--follow", action="store_true", help="show its progress until it ends")
    command = commands.add_parser("follow", help="follow a run to its end with a progress bar")
    command.add_argument("run_id", type=int)
    command = commands.add_parser("cancel", help="cancel a run")
    command.add_argument("run_id", type=int)
    command = commands.add_parser("models", help="list a project's model versions")
    command.add_argument("slug")
    command.add_argument("--kind", default="", choices=["", "reward", "policy"])
    command = commands.add_parser("make-current", help="make a model version its project's current one")
    command.add_argument("model_id", type=int)
    command = commands.add_parser("leaderboard", help="show a project's leaderboard")
    command.add_argument("slug")
    command.add_argument("--judge", default="human", choices=["human", "ai"])
    return parser


def run_command(args: argparse.Namespace) -> int:
    client = Client(args.url, args.token)
    if args.command == "projects":
        print(_table(client.projects(), ["slug", "name", "task_kinds", "responses_per_task", "overlap"]))
    elif args.command == "import":
        with tqdm(desc=f"import {args.file}", unit=" records", file=sys.stderr, disable=None) as bar:

            def show(job: dict) -> None:
                bar.n = (job.get("progress") or {}).get("records") or job.get("records") or 0
                bar.set_postfix_str(job["status"])

            job = client.import_file(args.slug, args.file, file_format=args.format, kind=args.kind, on_progress=show)
        print(f"imported {job['records']} records: {json.dumps(job.get('created') or {})}")
    elif args.command == "export":
        filters = {name: getattr(args, name) for name in ("since", "until", "source", "gold", "eval")}
        path = client.export(args.slug, args.kind, args.output, file_format=args.format,
                             **{name: value for name, value in filters.items() if value})  # fmt: skip
        print(f"wrote {path}")
    elif args.command == "snapshot":
        snapshot = client.snapshot(args.slug, args.kind, file_format=args.format)
        print(f"snapshot {snapshot['id']}: {snapshot['row_count']} rows, sha256 {snapshot['sha256']}")
    elif args.command == "run":
        run = client.start_run(args.slug, args.kind, **_settings(args.set))
        print(f"run {run['id']} ({run['kind']}) queued")
        if args.follow:
            return _ended(follow(client, run["id"]))
    elif args.command == "follow":
        return _ended(follow(client, args.run_id))
    elif args.command == "cancel":
        run = client.cancel_run(args.run_id)
        print(f"run {run['id']} {run['status']}")
    elif args.command == "models":
        rows = client.models(args.slug, kind=args.kind)
        print(_table(rows, ["id", "name", "kind", "is_current", "base_model", "training_run", "created_at"]))
    elif args.command == "make-current":
        version = client.make_current(args.model_id)
        print(f"{version['name']} is now the current {version['kind']} of {version['project']}")
    elif args.command == "leaderboard":
        board = client.leaderboard(args.slug, judge=args.judge)
        standings: list[dict[str, Any]] = [
            {**standing, "strength": f"{standing['strength']:.2f}" if standing.get("strength") is not None else None,
             "win_rate": f"{standing['win_rate']:.2f}" if standing.get("win_rate") is not None else None}
            for standing in board["standings"]
        ]  # fmt: skip
        print(_table(standings, ["rank", "name", "strength", "win_rate", "comparisons"]))
        for note in board.get("notes") or []:
            print(f"note: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
