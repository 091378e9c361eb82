"""Settings come from the environment, each with a quickstart default. Each case runs in a fresh
process, since settings are read once at start-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DUMP = """
import json
import django
django.setup()
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "debug": settings.DEBUG,
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST"), "port": db.get("PORT"),
    "broker": settings.CELERY_BROKER_URL,
    "broker_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "queues": [queue.name for queue in settings.CELERY_TASK_QUEUES],
    "default_queue": settings.CELERY_TASK_DEFAULT_QUEUE,
    "result_backend": settings.CELERY_RESULT_BACKEND,
    "beat_scheduler": settings.CELERY_BEAT_SCHEDULER,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "csrf_trusted_origins": settings.CSRF_TRUSTED_ORIGINS,
}))
"""

CONFIG_VARIABLES = (
    "DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_BROKER_DIR", "VAR_DIR",
    "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "ENV_FILE", "HTTPS", "TLS_PROXY", "DJANGO_ALLOW_ASYNC_UNSAFE",
)  # fmt: skip


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key not in CONFIG_VARIABLES}
    clean.update({
        "DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": str(tmp_path / "none.env"), **env,
    })  # fmt: skip
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def settings_with(tmp_path: Path, **env: str) -> dict:
    completed = run(["-c", DUMP], tmp_path, **env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_without_debug_the_app_refuses_to_start_without_a_secret_key(tmp_path):
    completed = run(["manage.py", "check"], tmp_path)
    assert completed.returncode != 0
    assert "SECRET_KEY is not set" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_make_runs_env_file_gives_every_command_a_secret_key_once_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    first = run(["-m", "config.dotenv"], tmp_path, ENV_FILE=str(env_file))
    assert first.returncode == 0 and "Wrote a new SECRET_KEY" in first.stdout
    written = env_file.read_text()
    assert run(["-m", "config.dotenv"], tmp_path, ENV_FILE=str(env_file)).stdout == ""
    assert env_file.read_text() == written  # once: the key stays the same across runs
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    checked = run(["manage.py", "check"], tmp_path, ENV_FILE=str(env_file))
    assert checked.returncode == 0, checked.stderr

    key = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    from_file = run(["-c", key], tmp_path, ENV_FILE=str(env_file)).stdout.strip()
    assert f"SECRET_KEY={from_file}\n" in written and len(from_file) > 50
    assert run(["-c", key], tmp_path, ENV_FILE=str(env_file), SECRET_KEY="from-env").stdout.strip() == "from-env"


def test_a_secret_key_is_added_to_an_env_file_that_has_none(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\n")
    assert run(["-m", "config.dotenv", str(env_file)], tmp_path).returncode == 0
    lines = env_file.read_text().splitlines()
    assert lines[0] == "LOG_LEVEL=DEBUG" and lines[1].startswith("SECRET_KEY=") and len(lines) == 2


def test_debug_is_off_unless_set(tmp_path):
    assert settings_with(tmp_path, SECRET_KEY="s")["debug"] is False
    assert settings_with(tmp_path, DEBUG="true")["debug"] is True


def test_the_quickstart_defaults_need_no_server(tmp_path):
    found = settings_with(tmp_path, SECRET_KEY="s")
    assert found["engine"] == "django.db.backends.sqlite3"
    assert found["name"] == str(tmp_path / "var" / "db.sqlite3")
    assert found["broker"].startswith("filesystem://")
    broker_dir = tmp_path / "var" / "broker"
    assert found["broker_options"]["data_folder_in"] == found["broker_options"]["data_folder_out"]
    for folder in ("queue", "control", "processed"):
        assert (broker_dir / folder).is_dir(), f"{folder} was not created at start-up"
    assert found["result_backend"] == "django-db"
    assert found["beat_scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"
    assert found["queues"] == ["default", "training"] and found["default_queue"] == "default"


def test_postgres_and_redis_come_from_the_environment(tmp_path):
    found = settings_with(
        tmp_path,
        SECRET_KEY="s",
        DATABASE_URL="postgres://studio:pw@db.internal:5433/studio",
        CELERY_BROKER_URL="redis://cache.internal:6379/2",
        ALLOWED_HOSTS="studio.example.org,localhost",
        CSRF_TRUSTED_ORIGINS="https://studio.example.org",
    )
    assert (found["engine"], found["name"], found["host"], found["port"]) == (
        "django.db.backends.postgresql",
        "studio",
        "db.internal",
        5433,
    )
    assert found["broker"] == "redis://cache.internal:6379/2"
    assert found["broker_options"]["visibility_timeout"] >= 3600
    assert not (tmp_path / "var" / "broker").exists()
    assert found["allowed_hosts"] == ["studio.example.org", "localhost"]
    assert found["csrf_trusted_origins"] == ["https://studio.example.org"]


STRONG_KEY = "k7#Qz!v2Lw9@pR4t$Xy8^Nb3&Hm6*Jc5(Fd1)Gs0-Ua_Ve+Wi=Yo{Zp}Aq[Br]Cs"
HTTPS_PROBE = """
import django
django.setup()
from django.test import Client
client = Client()
print(client.get("/login/").status_code, client.get("/login/", headers={"X-Forwarded-Proto": "https"}).status_code,
      client.get("/healthz").status_code)
"""


def test_the_production_settings_pass_djangos_deployment_checks(tmp_path):
    production = {"SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "studio.example.org"}
    checked = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **production)
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout
    # Plain HTTP must be asked for, and then the check says what it gives up.
    plain = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **production, HTTPS="false")
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr


def test_https_redirects_plain_http_and_trusts_a_tls_proxy_only_when_told(tmp_path):
    env = {"SECRET_KEY": STRONG_KEY, "ALLOWED_HOSTS": "testserver"}
    # Without TLS_PROXY a forwarded header is not believed; the health check is answered over plain HTTP.
    assert run(["-c", HTTPS_PROBE], tmp_path, **env).stdout.split() == ["301", "301", "200"]
    assert run(["-c", HTTPS_PROBE], tmp_path, **env, TLS_PROXY="true").stdout.split() == ["301", "200", "200"]
    assert run(["-c", HTTPS_PROBE], tmp_path, **env, HTTPS="false").stdout.split() == ["200", "200", "200"]


def test_the_web_app_never_loads_torch(tmp_path):
    """The web processes and the default worker need no torch: loading it costs some 300 MB and seconds in every
    process. Only the trainer subprocesses import it."""
    code = (
        "import sys, django; django.setup(); "
        "import config.urls, labeling.admin, labeling.tasks, labeling.runs, frontend.views; "
        "from django.urls import resolve; resolve('/'); "
        "print(sorted(name for name in ('torch', 'transformers', 'trl', 'accelerate') if name in sys.modules))"
    )
    done = run(["-c", code], tmp_path, SECRET_KEY="x", DJANGO_SETTINGS_MODULE="config.settings")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
