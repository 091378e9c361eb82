"""Which code is running, for the lineage of snapshots and models: ``CODE_VERSION`` if set (images set it
at build time), else ``git describe`` of the checkout, else the package version."""

import os
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@cache
def code_version() -> str:
    if os.environ.get("CODE_VERSION"):
        return os.environ["CODE_VERSION"]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return metadata.version("rlhf-studio")
    except metadata.PackageNotFoundError:
        return "unknown"
