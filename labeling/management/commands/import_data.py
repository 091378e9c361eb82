"""``manage.py import_data FILE --project SLUG``: prompts, responses and preference data from a file."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labeling import importers, services
from labeling.errors import ApplicationError
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Import a JSONL, CSV or Parquet file into a project: prompts, prompts with responses (tasks), TRL "
        "preference pairs, HH-RLHF transcripts, OpenAssistant trees, rankings or demonstrations. "
        "All or nothing; duplicates are skipped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True, help="the project's slug")
        parser.add_argument("--format", default="auto", choices=["auto", *importers.FILE_FORMATS])
        parser.add_argument("--kind", default="auto", choices=["auto", *importers.KINDS], help="the records' layout")
        parser.add_argument("--origin", default="", help="where the judgements came from (default: the file name)")
        parser.add_argument("--response-origin", default="imported", help="who wrote responses that do not say")
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="leave out records that do not parse (listed) instead of failing",
        )

    def handle(self, *args, file: Path, project: str, format: str, kind: str, origin: str, **options) -> None:
        target = Project.objects.filter(slug=project).first()
        if target is None:
            raise CommandError(f"There is no project '{project}'.")
        if not file.is_file():
            raise CommandError(f"There is no file {file}.")
        try:
            with open(file, "rb") as source, tqdm(desc="importing", unit=" records", leave=False) as bar:
                result = services.dataset_import_file(
                    project=target,
                    source=source,
                    name=file.name,
                    file_format=format,
                    kind=kind,
                    origin=origin,
                    response_origin=options["response_origin"],
                    skip_invalid=options["skip_invalid"],
                    progress=lambda records: bar.update(records - bar.n),
                )
        except ApplicationError as error:
            raise CommandError(f"{file.name}: {error.message} Nothing was imported.") from None
        created = ", ".join(f"{count} {what}" for what, count in result.created.items()) or "nothing"
        duplicates = {what: count for what, count in result.skipped.items() if what != "invalid records"}
        skipped = ", ".join(f"{count} {what}" for what, count in duplicates.items()) or "nothing"
        self.stdout.write(
            f"Imported {result.records} {result.kind} records into '{target.slug}': created {created}; "
            f"skipped as duplicates {skipped}."
        )
        if result.invalid:
            count = result.skipped["invalid records"]
            self.stdout.write(f"Left out {count} invalid records:")
            for record in result.invalid:
                self.stdout.write(f"  {record['message']}")
