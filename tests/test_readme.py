"""Every command the README shows in a ``sh`` block runs as written, in order, as a new user would run them on
the quickstart: ``make run`` first (it writes ``.env`` with a ``SECRET_KEY``, loads the demo and serves the
app), then the ``manage.py`` and ``python -m training`` commands, with none of the suite's settings in the
environment. One thing is set: the trainer's model cache points at the checkout's, so that the default policy
is converted from its GGUF file once per checkout rather than once per run of this test (the conversion itself
is tested in ``tests/training/test_default_models.py``).

The quickstart is SQLite and the filesystem broker under its own ``VAR_DIR`` here, whatever database the rest
of the suite runs on. ``make test`` is the command running this test, so it is checked as a make target
(``make -n test``) rather than run again inside itself."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.network import free_port

ROOT = Path(__file__).resolve().parents[1]
# What the user's shell would not have: the suite's own settings.
SUITE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_BROKER_DIR", "SECRET_KEY", "DEBUG", "VAR_DIR",
                   "ARTEFACTS_DIR", "MODEL_CACHE_DIR", "DJANGO_SETTINGS_MODULE")  # fmt: skip


def readme_commands() -> list[str]:
    """The commands of the README's ``sh`` blocks, in order: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


@pytest.fixture
def user_env(tmp_path) -> dict:
    """A new user's shell: none of the suite's settings; the quickstart's files in a folder of its own, and the
    converted default models where the checkout keeps them (they are converted once)."""
    env = {key: value for key, value in os.environ.items() if key not in SUITE_VARIABLES}
    cache = os.environ.get("MODEL_CACHE_DIR") or str(ROOT / "var" / "artefacts" / "cache")
    return {**env, "VAR_DIR": str(tmp_path / "var"), "ENV_FILE": str(tmp_path / ".env"), "RLHF_STUDIO_CACHE": cache}


def run_quickstart(env: dict) -> None:
    """``make run`` until the app answers, then Ctrl-C, as a person would."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env={**env, "WEB_ADDR": f"127.0.0.1:{port}"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"make run did not serve /healthz:\n{process.communicate(timeout=30)[0][-5000:]}")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert "SECRET_KEY" in Path(env["ENV_FILE"]).read_text()
    assert re.search(r"password: \S+", output), output[-3000:]  # the demo's logins, printed once loaded


def test_every_command_in_the_readme_runs_as_written(tmp_path, user_env):
    commands = readme_commands()
    assert commands[:2] == ["make run", "make test"]  # the README's first lines: the app, then the tests
    run_quickstart(user_env)
    dry_run = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, env=user_env)
    assert dry_run.returncode == 0 and "-m pytest" in dry_run.stdout

    # The rest run from a folder of their own (the paths they write are relative), as from a checkout.
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in (".venv", "manage.py", "labeling"):
        (workdir / name).symlink_to(ROOT / name)
    outputs = {}
    for command in commands[2:]:
        done = subprocess.run(command, shell=True, cwd=workdir, env=user_env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-5000:]}"
        outputs[command] = done.stdout

    # The import example adds its three pairs once; the README says running it again skips them all.
    [import_command] = [command for command in commands if "import_data" in command]
    again = subprocess.run(import_command, shell=True, cwd=workdir, env=user_env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "3 tasks" in outputs[import_command].split("skipped")[0], outputs[import_command]
    assert "created nothing;" in again.stdout and "3 tasks" in again.stdout.split("skipped")[1], again.stdout

    # What the commands made: the exports, a reward model, a policy and its PPO successor, new responses.
    # The demo's 190 imported rankings, less those on its eval prompts (held out of every training export).
    assert 150 <= len((workdir / "ranking.jsonl").read_text().splitlines()) < 190
    for model in ("runs/rm/model", "runs/sft/model", "runs/ppo/model"):
        assert (workdir / model / "config.json").exists(), model
    responses = [json.loads(line) for line in (workdir / "runs/generated/responses.jsonl").read_text().splitlines()]
    assert len({line["prompt_id"] for line in responses}) == 4 and len(responses) == 8
    assert [json.loads(line)["step"] for line in (workdir / "runs/ppo/metrics.jsonl").read_text().splitlines()
            if '"kl"' in line and '"event"' not in line] == [1, 2]  # fmt: skip
