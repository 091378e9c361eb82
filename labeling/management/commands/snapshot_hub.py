"""``manage.py snapshot_hub SNAPSHOT_ID --output FOLDER [--push ORG/NAME]``: a snapshot as a Hugging Face dataset
folder (Parquet shards and a dataset card), pushed to the Hub when asked and a token is set."""

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling import hub
from labeling.errors import ApplicationError
from labeling.models import DatasetSnapshot


class Command(BaseCommand):
    help = "Write a snapshot as a Hugging Face dataset folder that datasets.load_dataset reads, and push it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("snapshot", type=int, help="the snapshot's id (the admin's snapshot list shows it)")
        parser.add_argument("--output", "-o", required=True, type=Path, help="a new or empty folder")
        parser.add_argument("--license", default="", help="the card's licence (default: the project's data licence)")
        parser.add_argument("--shard-rows", type=int, default=hub.SHARD_ROWS, help="rows per Parquet shard")
        parser.add_argument("--push", metavar="REPO_ID", help="then upload it to this Hub dataset repository")
        parser.add_argument("--public", action="store_true", help="make a new Hub repository public (default private)")

    def handle(self, *args, snapshot: int, output: Path, **options) -> None:
        frozen = DatasetSnapshot.objects.select_related("project").filter(pk=snapshot).first()
        if frozen is None:
            raise CommandError(f"There is no snapshot {snapshot}.")
        if options["shard_rows"] < 1:
            raise CommandError("--shard-rows must be 1 or more.")
        token = os.environ.get("HF_TOKEN", "")
        if options["push"] and not token:
            raise CommandError("Set HF_TOKEN (a Hugging Face token with write access) to push; nothing was written.")
        try:
            written = hub.hub_folder_write(frozen, output, license=options["license"], shard_rows=options["shard_rows"])
            self.stdout.write(
                f"Wrote {written.rows} rows in {len(written.shards)} shards and a dataset card to {output}"
            )
            if options["push"]:
                url = hub.hub_push(
                    output, options["push"], token=token, private=not options["public"],
                    message=f"RLHF Studio snapshot {frozen.pk} (sha256 {frozen.sha256[:12]})",
                )  # fmt: skip
                self.stdout.write(f"Pushed to {url}")
        except ApplicationError as error:
            raise CommandError(error.message) from error
