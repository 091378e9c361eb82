"""A real S3-compatible server for tests: moto's standalone server, started as its own process on a free port
(the store's clients talk HTTP to it, as they would to MinIO or AWS)."""

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.network import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "studio-tests", "AWS_SECRET_ACCESS_KEY": "studio-tests-secret"}


@contextmanager
def s3_server(log_dir: Path) -> Iterator[str]:
    """Start ``moto_server``; yields its endpoint URL once it answers, and stops it afterwards."""
    port = free_port()
    log_path = log_dir / "moto.log"
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log_path.read_text()}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
