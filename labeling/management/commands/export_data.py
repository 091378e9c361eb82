"""``manage.py export_data --project SLUG --kind KIND``: a dataset file, or a frozen snapshot."""

import sys
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from labeling import exporters, selectors, services
from labeling.errors import ApplicationError
from labeling.models import Project


def _moment(value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        raise CommandError(f"'{value}' is not a date and time (use ISO 8601, e.g. 2026-11-01T00:00:00Z).")
    return moment


class Command(BaseCommand):
    help = "Export a project's judgements (preference, ranking, hh) or demonstrations (sft) as JSONL or Parquet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="the project's slug")
        parser.add_argument("--kind", required=True, choices=exporters.EXPORT_KINDS)
        parser.add_argument("--format", default="jsonl", choices=exporters.FILE_FORMATS)
        parser.add_argument("--output", "-o", default="-", help="a file, or - for standard output (JSONL only)")
        parser.add_argument("--conversational", action="store_true", help="prompts and replies as message lists")
        parser.add_argument("--since", type=_moment, help="judgements made at or after this time")
        parser.add_argument("--until", type=_moment, help="judgements made before this time")
        parser.add_argument("--rater", action="append", default=[], help="only this rater's work (repeatable)")
        parser.add_argument("--source", choices=["human", "ai"], help="only human or only AI judgements")
        parser.add_argument("--gold", default="include", choices=selectors.WHICH)
        parser.add_argument(
            "--paused", default="exclude", choices=selectors.WHICH, help="judgements by raters paused on the project"
        )
        parser.add_argument(
            "--eval", default="exclude", choices=selectors.WHICH, help="eval prompts, their judgements and replies"
        )
        parser.add_argument("--snapshot", action="store_true", help="freeze it as a dataset snapshot instead")

    def handle(self, *args, project: str, kind: str, format: str, output: str, **options) -> None:
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"There is no project '{project}'.")
        selection = selectors.ExportFilter(
            project_id=target.pk,
            since=options["since"],
            until=options["until"],
            raters=tuple(options["rater"]),
            source=options["source"],
            gold=options["gold"],
            paused=options["paused"],
            eval=options["eval"],
        )
        conversational = options["conversational"]
        try:
            if options["snapshot"]:
                snapshot = services.dataset_snapshot_create(
                    project=target, kind=kind, file_format=format, selection=selection, conversational=conversational
                )
                self.stdout.write(
                    f"Snapshot {snapshot.pk}: {snapshot.row_count} rows in {snapshot.path} (sha256 {snapshot.sha256})."
                )
                return
            if output == "-":
                if format != "jsonl":
                    raise CommandError("Parquet needs a file: give --output.")
                stats = exporters.write_export(
                    kind, format, selection, sys.stdout.buffer, conversational=conversational
                )
            else:
                with open(Path(output), "wb") as stream:
                    stats = exporters.write_export(kind, format, selection, stream, conversational=conversational)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stderr.write(
            f"Exported {stats.rows} rows ({stats.judgements} judgements, {stats.demonstrations} demonstrations)."
        )
