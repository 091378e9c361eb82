import uuid

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from labeling import services
from tests.factories import PASSWORD, ProjectFactory, UserFactory, task_create


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def rater(db):
    return UserFactory(username="rater", rater=True)


@pytest.fixture
def other_rater(db):
    return UserFactory(username="other", rater=True)


@pytest.fixture
def staff(db):
    return UserFactory(username="boss", is_staff=True, is_superuser=True)


@pytest.fixture
def project(db, rater):
    return ProjectFactory(members=[rater], overlap=2)


@pytest.fixture
def make_task(project):
    """Build a task: ``make_task(k=4)``; options go to the service (``gold_ranking``, ``required_judgements``)."""

    def make(k: int = 2, *, in_project=None, **options):
        return task_create(project=in_project or project, k=k, **options)

    return make


@pytest.fixture
def artefacts(settings, tmp_path):
    settings.ARTEFACTS_DIR = tmp_path / "artefacts"
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    return settings.ARTEFACTS_DIR


@pytest.fixture(autouse=True, scope="session")
def plain_http():
    """The test client and the live server speak plain HTTP, so HTTPS (on unless DEBUG) is off, as HTTPS=false
    would set it."""
    with override_settings(
        SECURE_SSL_REDIRECT=False, SESSION_COOKIE_SECURE=False, CSRF_COOKIE_SECURE=False, SECURE_HSTS_SECONDS=0
    ):
        yield


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache: the API's request counts of one test never throttle the next."""
    cache.clear()
    yield


@pytest.fixture
def staff_api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def rater_api(rater):
    client = APIClient()
    client.force_authenticate(rater)
    return client


@pytest.fixture
def api_import(staff_api, artefacts):
    """Upload a file through the API (202), run its import job as a worker would, and return the job as the
    API then shows it: ``api_import(project, b"...", "pairs.jsonl", kind="hh")``."""

    def run(project, content: bytes, name: str = "data.jsonl", **fields) -> dict:
        upload = SimpleUploadedFile(name, content, content_type="application/octet-stream")
        url = f"/api/v1/projects/{project.slug}/imports"
        response = staff_api.post(url, {"file": upload, **fields}, format="multipart")
        assert response.status_code == 202, response.content
        assert response.json()["status"] == "queued"
        services.import_job_execute(response.json()["id"])
        return staff_api.get(response["Location"]).json()

    return run


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    from tests.s3 import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(s3_endpoint, settings, monkeypatch, tmp_path):
    """The artefact store in a fresh bucket of the test S3 server, the local artefacts folder empty: what the
    app, the workers and the trainer they start read and write, over HTTP."""
    from labeling.artefacts import store
    from tests.s3 import CREDENTIALS

    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    settings.ARTEFACTS_URL = f"s3://studio-{uuid.uuid4().hex[:12]}/artefacts"
    settings.ARTEFACTS_DIR = tmp_path / "web" / "artefacts"
    settings.WORK_DIR = tmp_path / "web" / "work"
    settings.MODEL_CACHE_DIR = tmp_path / "web" / "cache"
    artefacts = store()
    artefacts.ensure()
    return artefacts
