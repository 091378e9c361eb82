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

    monkeypatch.setattr(selectors, "project_for_lease", unavailable)
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

    monkeypatch.setattr(selectors, "project_for_lease", broken)
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


def schema_fields(schema: dict, node: dict, path: str):
    """Every (path, leaf schema) in a request schema, following references."""
    if "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    for option in node.get("allOf", []) + node.get("oneOf", []):
        yield from schema_fields(schema, option, path)
    if node.get("type") == "object" or "properties" in node:
        for name, child in node.get("properties", {}).items():
            yield from schema_fields(schema, child, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            yield path, node
            yield from schema_fields(schema, node["additionalProperties"], f"{path}.*")
        return
    yield path, node
    if node.get("type") == "array" and "items" in node:
        yield from schema_fields(schema, node["items"], f"{path}[]")


def unbounded(node: dict) -> bool:
    kind = node.get("type")
    if "enum" in node or node.get("readOnly"):
        return False
    if kind == "string":
        return not ({"maxLength", "pattern"} & set(node) or node.get("format") in ("binary", "date-time", "duration"))
    if kind in ("integer", "number"):
        return not {"minimum", "maximum"} & set(node)
    if kind == "array":
        return "maxItems" not in node
    if kind == "object":
        return "description" not in node  # free-form JSON: its bound is stated in words
    return False


def test_every_field_the_api_takes_has_a_documented_bound(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    missing = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and unbounded(parameter["schema"]):
                    missing.append(f"{method.upper()} {path} ?{parameter['name']}")
            for content in operation.get("requestBody", {}).get("content", {}).values():
                for field, node in schema_fields(schema, content["schema"], ""):
                    if unbounded(node):
                        missing.append(f"{method.upper()} {path} {field}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_bodies_over_the_bounds_are_400s_naming_the_field(staff_api, project, rater_api, make_task):
    from labeling import validation

    url = f"/api/v1/projects/{project.slug}/prompts"
    too_long = staff_api.post(url, {"prompt": "x" * (validation.TEXT_MAX + 1)}, format="json")
    assert too_long.status_code == 400 and too_long.json()["message"].startswith("prompt:")
    many = [{"role": "user", "content": "hi"}] * (validation.MESSAGES_MAX + 1)
    assert staff_api.post(url, {"messages": many}, format="json").json()["message"].startswith("messages:")
    big = staff_api.post(url, {"prompt": "hi", "metadata": {"notes": "x" * validation.METADATA_MAX}}, format="json")
    assert big.status_code == 400 and "at most 20,000" in big.json()["message"]
    assert not Prompt.objects.filter(project=project).exists()
    raters = "&".join(f"rater=r{index}" for index in range(validation.NAMES_MAX + 1))
    assert staff_api.get(f"/api/v1/projects/{project.slug}/exports/preference?{raters}").status_code == 400

    task = make_task(k=2)
    ten_groups = [[index] for index in range(10)]
    body = {"client_submission_id": "x", "ranking": ten_groups}
    response = rater_api.post(f"/api/v1/tasks/{task.pk}/judgements", body, format="json")
    assert response.status_code == 400 and response.json()["message"].startswith("ranking:")


BIG = 10**20  # past a signed 64-bit integer: neither database takes it as a parameter


@pytest.mark.django_db
def test_an_id_too_big_for_the_database_is_a_404_in_a_path_and_a_400_in_a_body(rater_api, staff_api, rater):
    from tests.factories import ProjectFactory

    project = ProjectFactory(members=[rater])
    for url in (f"/api/v1/prompts/{BIG}/responses", f"/api/v1/snapshots/{BIG}", f"/api/v1/imports/{BIG}"):
        assert staff_api.get(url).status_code == 404, url
    assert rater_api.post(f"/api/v1/tasks/{BIG}/judgements", {}, format="json").status_code == 404
    bodies = {
        f"/api/v1/projects/{project.slug}/tasks": {"prompt_id": BIG, "response_ids": [BIG, 1]},
        f"/api/v1/projects/{project.slug}/evaluations": {"policies": [BIG]},
    }
    for url, body in bodies.items():
        answer = staff_api.post(url, body, format="json")
        assert answer.status_code == 400, (url, answer.content)
    answer = staff_api.get(f"/api/v1/projects/{project.slug}/critique-chains/next", {"exclude": str(BIG)})
    assert answer.status_code == 400 and "exclude" in str(answer.json())


@pytest.mark.django_db
def test_a_task_naming_a_response_twice_is_a_400(staff_api):
    from tests.factories import ProjectFactory, PromptFactory, ResponseFactory

    project = ProjectFactory()
    response = ResponseFactory(prompt=PromptFactory(project=project))
    body = {"prompt_id": response.prompt_id, "response_ids": [response.pk, response.pk]}
    answer = staff_api.post(f"/api/v1/projects/{project.slug}/tasks", body, format="json")
    assert answer.status_code == 400 and "appears more than once" in answer.json()["message"]
