"""docker-compose.yml: every service on the same database and broker; the trainer on the GPU queue only."""

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("web", "worker", "trainer", "beat")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else command


def queues_of(service: dict) -> set[str]:
    words = command_of(service)
    assert words[:4] == ["celery", "-A", "config", "worker"]
    return set(words[words.index("--queues") + 1].split(","))


def test_the_stack_has_the_seven_services(services):
    assert set(services) == {"postgres", "redis", "minio", "web", "worker", "trainer", "beat"}


def test_artefacts_go_to_minio_and_the_trainer_shares_no_folder(services):
    minio = services["minio"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert urlsplit(environment["ARTEFACTS_URL"]).scheme == "s3"
        assert urlsplit(environment["AWS_ENDPOINT_URL"]).hostname == "minio"
        assert environment["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    volume = lambda name: {mount.split(":")[0] for mount in services[name]["volumes"]}  # noqa: E731
    assert volume("trainer").isdisjoint(volume("web") | volume("worker"))
    assert services["web"]["depends_on"]["minio"]["condition"] == "service_healthy"
    command = " ".join(command_of(services["web"]))
    assert command.index("artefacts_check") < command.index("gunicorn config.wsgi")


def test_every_app_service_uses_the_same_database_and_broker(services):
    environments = [services[name]["environment"] for name in APP_SERVICES]
    assert len({env["DATABASE_URL"] for env in environments}) == 1
    assert len({env["CELERY_BROKER_URL"] for env in environments}) == 1
    assert len({env["SECRET_KEY"] for env in environments}) == 1

    database = urlsplit(environments[0]["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.scheme == "postgres" and database.hostname == "postgres"
    assert (database.username, database.password, database.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    broker = urlsplit(environments[0]["CELERY_BROKER_URL"])
    assert (broker.scheme, broker.hostname) == ("redis", "redis")


def test_the_secret_key_must_be_given(services):
    assert re.fullmatch(r"\$\{SECRET_KEY:\?.+\}", services["web"]["environment"]["SECRET_KEY"])


def test_the_trainer_listens_on_training_only_with_a_gpu(services):
    trainer = services["trainer"]
    assert queues_of(trainer) == {"training"}
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices)
    # PyPI's torch wheel for Linux is the CUDA build; the other images take the CPU index.
    assert trainer["build"]["args"]["TORCH_INDEX_URL"] == ""


def test_the_worker_listens_on_default_only(services):
    assert queues_of(services["worker"]) == {"default"}


def test_beat_uses_the_database_schedule_from_the_settings(services):
    assert command_of(services["beat"])[:4] == ["celery", "-A", "config", "beat"]


def test_web_migrates_before_gunicorn_starts(services):
    command = " ".join(command_of(services["web"]))
    assert command.index("manage.py migrate") < command.index("gunicorn config.wsgi")
    assert "healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health(services):
    postgres = services["postgres"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert services["web"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "trainer", "beat"):
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"


def test_the_image_pins_torch_like_the_project(services):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt" in dockerfile
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()
