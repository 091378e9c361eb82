"""``manage.py artefacts_check``: make the artefact store's bucket or folder if it is missing, then write, read
back and remove a small file, so that a misconfigured store stops the deployment at start-up, not a run later."""

import tempfile
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.artefacts import store
from training.store import file_digests


class Command(BaseCommand):
    help = "Check that the artefact store (ARTEFACTS_URL) can be written and read; make its bucket if missing."

    def handle(self, *args, **options) -> None:
        artefacts = store()
        key = f"checks/{uuid.uuid4().hex}"
        try:
            artefacts.ensure()
            with tempfile.TemporaryDirectory() as folder:
                probe = Path(folder) / "probe"
                probe.write_bytes(uuid.uuid4().bytes * 64)
                artefacts.put_file(probe, key)
                artefacts.get_file(key, Path(folder) / "back", file_digests(probe)[0])
            artefacts.remove(key)
        except Exception as error:
            raise CommandError(f"The artefact store at {artefacts.url} does not answer as it should: {error}") from None
        self.stdout.write(f"The artefact store at {artefacts.url} is writable and reads back what it was given.")
