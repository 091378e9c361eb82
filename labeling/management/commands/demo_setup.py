"""``manage.py demo_setup``: the demo project and accounts, loaded once; prints how to log in."""

import json
import secrets
import string
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from labeling import services

DEMO_DATA_DIR = Path(__file__).resolve().parents[2] / "demo_data"
PASSWORD_ALPHABET = string.ascii_letters + string.digits
DEMO_ACCOUNTS = {"admin": True, "rater1": False, "rater2": False}  # username -> is staff


class Command(BaseCommand):
    help = "Create the demo project (OpenAssistant prompts with human rankings), a demo admin and two raters."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--credentials",
            type=Path,
            default=settings.VAR_DIR / "demo-credentials.json",
            help="Where the generated demo passwords are kept (default: var/demo-credentials.json).",
        )

    def handle(self, *args, credentials: Path, **options) -> None:
        passwords = json.loads(credentials.read_text(encoding="utf-8")) if credentials.exists() else {}
        users = []
        for username, staff in DEMO_ACCOUNTS.items():
            known = username in passwords
            password = passwords.setdefault(username, "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(12)))
            users.append(
                services.rater_ensure(username=username, password=password, staff=staff, reset_password=not known)
            )
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text(json.dumps(passwords, indent=2) + "\n", encoding="utf-8")
        credentials.chmod(0o600)

        result = services.demo_project_ensure(data_dir=DEMO_DATA_DIR, members=[u for u in users if not u.is_staff])
        if result.created:
            self.stdout.write(
                f"Loaded the demo project '{result.project.name}': {result.prompts} prompts, {result.tasks} "
                f"tasks ({result.gold_tasks} gold), {result.judgements} OpenAssistant judgements, "
                f"{result.demonstrations} demonstrations; {result.eval_prompts} eval prompts, {result.eval_tasks} "
                f"evaluation tasks (the default policy against the OpenAssistant replies), {result.ai_labels} AI "
                "labels on them."
            )
        else:
            self.stdout.write(f"The demo project '{result.project.name}' is already loaded.")
        self.stdout.write(f"Demo accounts (passwords kept in {credentials}):")
        for username, staff in DEMO_ACCOUNTS.items():
            role = "admin " if staff else "rater "
            self.stdout.write(f"  {role} {username:8} password: {passwords[username]}")
        self.stdout.write("Open http://127.0.0.1:8000/ (raters) or http://127.0.0.1:8000/admin/ (admin).")
