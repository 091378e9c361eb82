"""The REST API for admins and scripts: projects and their content, imports, exports and snapshots, its
permissions and its OpenAPI schema."""

import hashlib
import io
import json
import re

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import services
from labeling.models import ComparisonTask, DatasetSnapshot, ImportJob, Judgement, Project, Prompt

pytestmark = pytest.mark.django_db

PAIRS = [
    {"prompt": "Best fruit?", "chosen": "Mango.", "rejected": "Rock."},
    {"prompt": "2+2?", "chosen": "4", "rejected": "22"},
]


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_staff_import_a_file_through_the_api_as_a_job_to_poll(staff_api, project, artefacts):
    file = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS))
    response = staff_api.post(f"/api/v1/projects/{project.slug}/imports", {"file": file}, format="multipart")
    assert response.status_code == 202, response.content
    job = response.json()
    assert (job["status"], job["file_name"], job["file_format"], job["file_size"]) == (
        "queued",
        "pairs.jsonl",
        "jsonl",
        len(jsonl(PAIRS)),
    )
    assert response["Location"] == job["url"] == f"/api/v1/imports/{job['id']}"
    assert not Prompt.objects.filter(project=project).exists()  # nothing is imported inside the request

    assert services.import_job_execute(job["id"], worker="w1") == "succeeded"
    done = staff_api.get(job["url"]).json()
    assert {key: done[key] for key in ("status", "kind", "records", "created", "skipped", "error")} == {
        "status": "succeeded",
        "kind": "preference",
        "records": 2,
        "created": {"prompts": 2, "responses": 4, "tasks": 2, "judgements": 2},
        "skipped": {},
        "error": "",
    }
    assert done["created_by"] == "boss" and done["finished_at"] >= done["started_at"]
    assert not (artefacts / "imports" / str(job["id"])).exists()  # the stored upload is removed once imported
    listed = staff_api.get(f"/api/v1/projects/{project.slug}/imports").json()
    assert [row["id"] for row in listed["results"]] == [job["id"]]


def test_a_bad_record_fails_the_job_naming_line_and_field_and_imports_nothing(api_import, project):
    records = [*PAIRS, {"prompt": "x", "chosen": "a"}]
    job = api_import(project, jsonl(records), "pairs.jsonl")
    assert (job["status"], job["error_line"], job["error_field"]) == ("failed", 3, "rejected")
    assert job["error"] == (
        "Line 3, field 'rejected': expected text or a list of assistant messages. Nothing was imported."
    )
    assert not Prompt.objects.filter(project=project).exists()


def test_uploads_over_the_limit_are_413_before_anything_is_stored(staff_api, project, artefacts, settings):
    settings.IMPORT_MAX_BYTES = 100
    file = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS * 5))
    response = staff_api.post(f"/api/v1/projects/{project.slug}/imports", {"file": file}, format="multipart")
    assert response.status_code == 413
    assert response.json()["message"].endswith("imports take at most 100 bytes (IMPORT_MAX_BYTES).")
    assert not ImportJob.objects.exists() and not (artefacts / "imports").exists()
    settings.IMPORT_MAX_BYTES = 10_000
    bad = staff_api.post(
        f"/api/v1/projects/{project.slug}/imports", {"file": SimpleUploadedFile("a.txt", b"x")}, format="multipart"
    )
    assert bad.status_code == 400 and "a.txt" in bad.json()["message"] and not ImportJob.objects.exists()


def test_exports_stream_as_jsonl_or_parquet(staff_api, project, api_import):
    api_import(project, jsonl(PAIRS))
    response = staff_api.get(f"/api/v1/projects/{project.slug}/exports/preference")
    assert response.status_code == 200 and response.streaming
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert lines == PAIRS
    assert response["Content-Disposition"] == f'attachment; filename="{project.slug}-preference.jsonl"'
    response = staff_api.get(f"/api/v1/projects/{project.slug}/exports/ranking?format=parquet&source=human")
    table = pq.read_table(io.BytesIO(b"".join(response.streaming_content)))
    assert table.num_rows == 2 and table.column("ranking").to_pylist() == [[[0], [1]], [[0], [1]]]
    assert staff_api.get(f"/api/v1/projects/{project.slug}/exports/nonsense").status_code == 404
    bad = staff_api.get(f"/api/v1/projects/{project.slug}/exports/ranking?gold=maybe")
    assert bad.status_code == 400 and bad.json()["message"].startswith("gold:")


def test_snapshots_are_frozen_listed_and_downloaded_byte_for_byte(staff_api, project, api_import):
    api_import(project, jsonl(PAIRS))
    response = staff_api.post(f"/api/v1/projects/{project.slug}/snapshots", {"kind": "preference"}, format="json")
    assert response.status_code == 201, response.content
    snapshot = response.json()
    assert (snapshot["row_count"], snapshot["kind"], snapshot["file_format"]) == (2, "preference", "jsonl")
    listed = staff_api.get(f"/api/v1/projects/{project.slug}/snapshots").json()
    assert [row["id"] for row in listed["results"]] == [snapshot["id"]]
    download = staff_api.get(snapshot["download"])
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == snapshot["sha256"] == download["X-Content-SHA256"]
    # New judgements do not change a frozen snapshot.
    assert api_import(project, jsonl([{**PAIRS[0], "chosen": "Kiwi."}]))["created"]["judgements"] == 1
    assert b"".join(staff_api.get(snapshot["download"]).streaming_content) == body


def test_staff_create_projects_prompts_responses_and_tasks(staff_api, rater):
    response = staff_api.post(
        "/api/v1/projects", {"name": "Chat", "slug": "chat", "overlap": 2, "members": ["rater"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert Project.objects.get(slug="chat").members.get() == rater
    bad = staff_api.post("/api/v1/projects", {"name": "Wide", "slug": "wide", "responses_per_task": 12}, format="json")
    assert bad.status_code == 400 and "between 2 and 9" in bad.json()["message"]

    prompt = staff_api.post("/api/v1/projects/chat/prompts", {"prompt": "Tell a joke."}, format="json").json()
    ids = [
        staff_api.post(
            f"/api/v1/prompts/{prompt['id']}/responses", {"text": text, "origin": "m1"}, format="json"
        ).json()["id"]
        for text in ("Knock knock.", "No.")
    ]
    task = staff_api.post(
        "/api/v1/projects/chat/tasks", {"prompt_id": prompt["id"], "response_ids": ids}, format="json"
    )
    assert task.status_code == 201 and task.json()["response_ids"] == ids
    assert ComparisonTask.objects.get().required_judgements == 2
    listed = staff_api.get("/api/v1/projects/chat/tasks?status=open").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == task.json()["id"]
    patched = staff_api.patch("/api/v1/projects/chat", {"overlap": 3}, format="json")
    assert patched.status_code == 200 and patched.json()["overlap"] == 3


def test_lists_are_paginated(staff_api, project):
    for index in range(55):
        Prompt.objects.create(project=project, messages=[{"role": "user", "content": f"Q{index}"}])
    first = staff_api.get(f"/api/v1/projects/{project.slug}/prompts").json()
    assert (first["count"], len(first["results"])) == (55, 50) and first["next"]
    assert len(staff_api.get(first["next"]).json()["results"]) == 5


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/v1/projects/{slug}/imports"),
        ("get", "/api/v1/projects/{slug}/imports"),
        ("get", "/api/v1/imports/{job}"),
        ("get", "/api/v1/projects/{slug}/exports/preference"),
        ("get", "/api/v1/projects/{slug}/snapshots"),
        ("post", "/api/v1/projects/{slug}/snapshots"),
        ("get", "/api/v1/snapshots/{snapshot}"),
        ("get", "/api/v1/snapshots/{snapshot}/download"),
        ("get", "/api/v1/projects/{slug}/prompts"),
        ("post", "/api/v1/projects"),
    ],
)
def test_raters_get_403_and_anonymous_callers_401_on_admin_endpoints(rater_api, project, method, path):
    snapshot = DatasetSnapshot.objects.create(project=project, kind="sft", path="x.jsonl", sha256="0" * 64)
    job = ImportJob.objects.create(project=project, file_name="a.jsonl", file_format="jsonl")
    url = path.format(slug=project.slug, snapshot=snapshot.pk, job=job.pk)
    response = getattr(rater_api, method)(url)
    assert response.status_code == 403
    assert response.json() == {"message": "This is for administrators.", "extra": {}}
    assert getattr(APIClient(), method)(url).status_code == 401


def test_a_rater_lists_only_their_own_judgements(rater_api, staff_api, project, rater, other_rater, make_task):
    from labeling import services

    project.members.add(other_rater)
    task = make_task(k=2)
    services.judgement_create(task=task, rater=rater, ranking=[task.response_ids()], client_submission_id="mine")
    services.judgement_create(
        task=task, rater=other_rater, ranking=[task.response_ids()], client_submission_id="theirs"
    )
    mine = rater_api.get(f"/api/v1/projects/{project.slug}/judgements").json()
    assert [row["rater"] for row in mine["results"]] == ["rater"]
    assert staff_api.get(f"/api/v1/projects/{project.slug}/judgements").json()["count"] == 2
    assert Judgement.objects.count() == 2


def test_scripts_authenticate_with_a_token(staff, project):
    token = Token.objects.create(user=staff)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(f"/api/v1/projects/{project.slug}/snapshots").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert client.get(f"/api/v1/projects/{project.slug}/snapshots").status_code == 401


def test_the_openapi_schema_validates_and_the_docs_use_local_assets(client, tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/v1/projects/{slug}/imports" in schema["paths"]
    assert "/api/v1/tasks/{task_id}/judgements" in schema["paths"]
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "cdn.jsdelivr" not in docs

    # Error answers are documented, in the one shape they have; files come with their real content types.
    submit = schema["paths"]["/api/v1/tasks/{task_id}/judgements"]["post"]["responses"]
    assert {"400", "401", "403", "404", "429", "500", "503"} <= set(submit)
    assert submit["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert schema["components"]["schemas"]["Error"]["required"] == ["message", "extra"]
    upload = schema["paths"]["/api/v1/projects/{slug}/imports"]["post"]["responses"]
    assert {"202", "413"} <= set(upload) and "413" not in submit
    download = schema["paths"]["/api/v1/snapshots/{snapshot_id}/download"]["get"]["responses"]["200"]["content"]
    assert set(download) == {"application/jsonl", "application/vnd.apache.parquet"}
    exclude = next(
        parameter for parameter in schema["paths"]["/api/v1/projects/{slug}/demonstrations/next"]["get"]["parameters"]
        if parameter["name"] == "exclude"
    )  # fmt: skip
    assert re.fullmatch(exclude["schema"]["pattern"], "") and re.fullmatch(exclude["schema"]["pattern"], "1,2")


def test_admins_import_and_export_from_the_admin_pages(admin_client, project, artefacts, settings):
    url = reverse("admin:labeling_project_import", args=[project.pk])
    file = SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS))
    response = admin_client.post(url, {"file": file, "format": "auto", "kind": "auto", "origin": ""})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:labeling_importjob_change", args=[job.pk]
    )
    page = admin_client.get(response["Location"]).content.decode()
    assert "waiting for a worker" in page and 'http-equiv="refresh"' in page
    assert "/delete/" not in page  # a job a worker may be holding cannot be deleted
    services.import_job_execute(job.pk)
    assert Judgement.objects.filter(task__project=project).count() == 2
    page = admin_client.get(response["Location"]).content.decode()
    assert "Succeeded" in page and 'http-equiv="refresh"' not in page and "/delete/" in page

    bad_file = SimpleUploadedFile("bad.jsonl", jsonl([{"prompt": "x", "chosen": "a"}]))
    admin_client.post(url, {"file": bad_file, "format": "auto", "kind": "preference"})
    bad_job = ImportJob.objects.latest("id")
    services.import_job_execute(bad_job.pk)
    page = admin_client.get(reverse("admin:labeling_importjob_change", args=[bad_job.pk])).content.decode()
    assert 'id="import-error"' in page and "Line 1, field &#x27;rejected&#x27;" in page
    skipping = SimpleUploadedFile("pairs.jsonl", jsonl([*PAIRS, {"prompt": "x", "chosen": "a"}]))  # same origin
    admin_client.post(url, {"file": skipping, "format": "auto", "kind": "preference", "skip_invalid": "on"})
    skip_job = ImportJob.objects.latest("id")
    services.import_job_execute(skip_job.pk)
    skip_job.refresh_from_db()
    assert skip_job.status == "succeeded" and skip_job.skip_invalid
    assert skip_job.skipped == {"invalid records": 1, "prompts": 2, "responses": 4, "tasks": 2, "judgements": 2}
    assert skip_job.invalid[0]["line"] == len(PAIRS) + 1
    page = admin_client.get(reverse("admin:labeling_importjob_change", args=[skip_job.pk])).content.decode()
    assert "expected text or a list of assistant messages" in page
    settings.IMPORT_MAX_BYTES = 10
    too_big = admin_client.post(url, {"file": SimpleUploadedFile("pairs.jsonl", jsonl(PAIRS)), "format": "auto"})
    assert too_big.status_code == 413 and "IMPORT_MAX_BYTES" in too_big.content.decode()
    assert ImportJob.objects.count() == 3

    export_url = reverse("admin:labeling_project_export", args=[project.pk])
    form = {"kind": "preference", "format": "jsonl", "gold": "include", "source": ""}
    download = admin_client.post(export_url, form)
    assert [json.loads(line) for line in b"".join(download.streaming_content).decode().splitlines()] == PAIRS
    frozen = admin_client.post(export_url, {**form, "snapshot": "on"})
    assert frozen.status_code == 302 and DatasetSnapshot.objects.get().row_count == 2
    action = admin_client.post(
        reverse("admin:labeling_project_changelist"), {"action": "export_data", "_selected_action": [project.pk]}
    )
    assert action.status_code == 302 and action["Location"] == export_url
