import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

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
