"""Runs and model versions in the API, with the admin's permissions: list, start (every kind, its config checked
by the kind's own form), follow, cancel; list versions and make one current. Raters get none of it."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from labeling import runs, services
from labeling.models import ModelVersion, TrainingRun
from tests.factories import ProjectFactory, PromptFactory
from training.config import SFTConfig

pytestmark = pytest.mark.django_db


@pytest.fixture
def demonstrations():
    project = ProjectFactory()
    for index in range(3):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"question {index}"}])
        services.demonstration_create(prompt=prompt, text=f"answer {index}", origin="tests")
    return project


def test_staff_start_a_run_of_any_kind_with_its_config_and_follow_it(staff_api, demonstrations, artefacts):
    url = f"/api/v1/projects/{demonstrations.slug}/runs"
    config = {"base_model": "tiny-policy", "epochs": 3, "learning_rate": 0.001, "batch_size": 2, "lora": True}
    response = staff_api.post(url, {"kind": "sft", "config": config}, format="json")
    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["kind"], run["status"], run["phase"], run["base_model"]) == ("sft", "queued", "queued", "tiny-policy")
    assert run["config"] == {"epochs": 3.0, "learning_rate": 0.001, "batch_size": 2, "lora": True}
    stored = TrainingRun.objects.get(pk=run["id"])
    assert stored.snapshot.kind == "sft" and stored.snapshot.row_count == 3  # frozen for the run, as the admin does
    TrainingRun.objects.filter(pk=run["id"]).update(
        status="running", metrics={"phase": "training", "phase_progress": 0.5}, progress=0.5,
        history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
    )  # fmt: skip
    followed = staff_api.get(f"/api/v1/runs/{run['id']}").json()
    assert (followed["status"], followed["phase"], followed["progress"]) == ("running", "training", 0.5)
    assert "history" not in followed
    assert staff_api.get(f"/api/v1/runs/{run['id']}?history=true").json()["history"][1] == {"step": 2, "loss": 1.5}
    listed = staff_api.get(url, {"kind": "sft"}).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == run["id"]
    assert staff_api.get(url, {"kind": "ppo"}).json()["count"] == 0


def test_a_wrong_or_unknown_setting_is_a_400_naming_it_and_starts_nothing(staff_api, demonstrations, artefacts):
    url = f"/api/v1/projects/{demonstrations.slug}/runs"
    response = staff_api.post(url, {"kind": "sft", "config": {"epochs": -1, "base_model": "m"}}, format="json")
    assert response.status_code == 400 and "epochs" in response.json()["extra"]["fields"]
    response = staff_api.post(url, {"kind": "sft", "config": {"base_model": "m", "epoch": 2}}, format="json")
    assert response.status_code == 400
    assert response.json()["extra"]["fields"] == {"epoch": ["Unknown setting."]}
    assert "takes no epoch" in response.json()["message"]
    response = staff_api.post(url, {"kind": "teleport", "config": {}}, format="json")
    assert response.status_code == 400 and "kind" in response.json()["extra"]["fields"]
    defaults = staff_api.post(url, {"kind": "sft", "config": {"base_model": "m"}}, format="json")
    assert defaults.status_code == 201 and defaults.json()["config"]["epochs"] == SFTConfig.epochs  # the page's default
    TrainingRun.objects.all().delete()
    response = staff_api.post(url, {"kind": "ppo", "config": {"base_model": "m"}}, format="json")
    assert response.status_code == 400  # the service refuses: no reward model
    assert TrainingRun.objects.count() == 0


def test_cancel_needs_the_admins_permission_and_an_unfinished_run(client, staff, staff_api, demonstrations, artefacts):
    run = runs.sft_run_start(project=demonstrations, base_model="m")
    plain_staff = APIClient()
    plain_staff.force_authenticate(type(staff).objects.create_user("helper", password="x", is_staff=True))
    assert plain_staff.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="change_trainingrun"))
    answer = staff_api.post(f"/api/v1/runs/{run.pk}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert staff_api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 409


def test_model_versions_are_listed_and_one_made_current(staff_api):
    project = ProjectFactory()
    first = ModelVersion.objects.create(project=project, kind="policy", name="sft-1", is_current=True)
    second = ModelVersion.objects.create(project=project, kind="policy", name="dpo-2", parent=first)
    ModelVersion.objects.create(project=project, kind="reward", name="reward-3")
    listed = staff_api.get(f"/api/v1/projects/{project.slug}/models", {"kind": "policy"}).json()
    assert [row["name"] for row in listed["results"]] == ["dpo-2", "sft-1"]
    assert listed["results"][0]["parent"] == first.pk
    answer = staff_api.post(f"/api/v1/models/{second.pk}/current")
    assert answer.status_code == 200 and answer.json()["is_current"] is True
    first.refresh_from_db()
    assert not first.is_current
    assert staff_api.get(f"/api/v1/models/{second.pk}").json()["name"] == "dpo-2"


def test_raters_reach_no_run_or_model(rater_api, demonstrations):
    run = runs.sft_run_start(project=demonstrations, base_model="m")
    version = ModelVersion.objects.create(project=demonstrations, kind="policy", name="p")
    for method, url in [
        ("get", f"/api/v1/projects/{demonstrations.slug}/runs"),
        ("post", f"/api/v1/projects/{demonstrations.slug}/runs"),
        ("get", f"/api/v1/runs/{run.pk}"),
        ("post", f"/api/v1/runs/{run.pk}/cancel"),
        ("get", f"/api/v1/projects/{demonstrations.slug}/models"),
        ("post", f"/api/v1/models/{version.pk}/current"),
    ]:
        assert getattr(rater_api, method)(url).status_code == 403, url
