"""Bad input and bad moments are answered as JSON on the API with a status that says whose fault it is: deep
nesting and NUL characters (400 naming the field), unreadable CSV and Parquet uploads (400 naming the
problem), a database that does not answer (503 with Retry-After), and any bug (500 with an id in the log)."""

import json
import logging

import pytest
from django.db import OperationalError

from labeling import selectors
from labeling.models import Prompt


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_json_body_nested_a_thousand_deep_is_a_400(rater_api, make_task):
    task = make_task(k=2)
    body = "[" * 1000 + "]" * 1000
    response = rater_api.post(f"/api/v1/tasks/{task.pk}/judgements", body, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["message"]
    deep = json.dumps({"client_submission_id": "x", "ranking": [[1]], "flags": {"a": nested(40)}})
    response = rater_api.post(f"/api/v1/tasks/{task.pk}/judgements", deep, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["message"]


def test_nul_characters_are_400s_naming_the_field_in_bodies_queries_and_imports(
    staff_api, project, staff, client, api_import
):
    body = {"prompt": "Hi", "metadata": {"topic": "a\x00b"}}
    response = staff_api.post(f"/api/v1/projects/{project.slug}/prompts", body, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "Field 'metadata.topic' contains a NUL character, which cannot be stored."
    response = staff_api.get(f"/api/v1/projects/{project.slug}/judgements?rater=%00")
    assert response.status_code == 400 and response.json()["extra"] == {"field": "rater"}

    client.force_login(staff)
    page = client.get("/admin/labeling/trainingrun/?status=%00")
    assert page.status_code == 400 and b"NUL character" in page.content

    lines = b'{"prompt": "fine"}\n{"prompt": "bad \\u0000 prompt"}\n'
    job = api_import(project, lines, "p.jsonl")
    assert job["status"] == "failed" and (job["error_line"], job["error_field"]) == (2, "prompt")
    assert job["error"].startswith("Line 2, field 'prompt': contains a NUL character")
    assert not Prompt.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("pairs.csv", b"prompt,chosen,rejected\nhi,caf\xe9,no\n", "not UTF-8 text"),
        ("pairs.parquet", b"this is not parquet at all", "not a Parquet file"),
    ],
)
def test_unreadable_uploads_fail_their_job_saying_what_is_wrong(api_import, project, name, content, message):
    job = api_import(project, content, name)
    assert job["status"] == "failed" and message in job["error"], job
    assert not Prompt.objects.filter(project=project).exists()


def test_a_database_that_does_not_answer_is_a_503_with_retry_after(rater_api, project, rater, client, monkeypatch):
    def unavailable(**kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed: the database system is shutting down")

    monkeypatch.setattr(selectors, "project_for_labelling", unavailable)
    response = rater_api.post(f"/api/v1/projects/{project.slug}/tasks/next")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["message"] == "The database is not answering; try again in a few seconds."

    monkeypatch.setattr(selectors, "project_list_for_user", unavailable)
    client.force_login(rater)
    page = client.get("/")
    assert page.status_code == 503 and page["Retry-After"] == "5"


def test_a_bug_is_a_500_in_json_with_an_id_that_the_log_repeats(rater_api, project, monkeypatch, caplog):
    def broken(**kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(selectors, "project_for_labelling", broken)
    with caplog.at_level(logging.ERROR, logger="labeling.errors"):
        response = rater_api.post(f"/api/v1/projects/{project.slug}/tasks/next")
    assert response.status_code == 500
    request_id = response.json()["extra"]["request_id"]
    assert request_id in response.json()["message"] and "ZeroDivisionError" not in response.json()["message"]
    assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


def test_over_the_rate_the_api_answers_429_with_retry_after(rater_api, project, settings, client):
    settings.API_RATE_USER = "5/min"
    settings.API_RATE_ANON = "2/min"
    statuses = [rater_api.get(f"/api/v1/projects/{project.slug}/judgements").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = rater_api.get(f"/api/v1/projects/{project.slug}/judgements")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["message"].lower()
    # Anonymous calls (the schema is the one call open to them) are counted per address, and much lower.
    anonymous = [client.get("/api/schema/").status_code for _ in range(3)]
    assert anonymous == [200, 200, 429]
