"""The quickstart's local settings file: ``make run`` writes ``.env`` with a generated ``SECRET_KEY`` once, and
``config.settings`` reads it, so that every command the README shows (``manage.py ...``, Celery) runs without
setting anything by hand. Variables set in the environment win over the file. ``.env`` is never committed.

``python -m config.dotenv [FILE]`` adds the key to FILE (default: ``$ENV_FILE`` or ``.env`` in the checkout)
when it has none, and leaves everything else in the file as it is. (django-environ reads a value that starts
with ``$`` as the name of another variable: a key written by hand should not start with one; generated keys
never do.)"""

import os
import re
import secrets
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env_file() -> Path:
    return Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")


def ensure_secret_key(path: Path) -> bool:
    """Add a generated ``SECRET_KEY`` to ``path`` (made if missing) unless it has one; True when it wrote."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if re.search(r"^[ \t]*(export[ \t]+)?SECRET_KEY[ \t]*=[ \t]*\S", text, re.MULTILINE):
        return False
    lines = [] if not text else [text.rstrip("\n")]
    if not text:
        lines.append("# Local settings for the quickstart, written by `make run`. Never commit this file.")
    lines.append(f"SECRET_KEY={secrets.token_urlsafe(50)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return True


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else env_file()
    if ensure_secret_key(path):
        print(f"Wrote a new SECRET_KEY to {path} (kept there for later runs and commands).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
