"""The rater endpoints the task page calls: next task, submit, skip, report, demonstrations."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.http import HttpRequest
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from labeling import rendering, services
from labeling.api import rating
from labeling.models import Assignment, Demonstration, Judgement, Prompt, Response, TaskProblemReport
from labeling.services.reports import OPEN_REPORTS_PER_RATER
from tests.factories import PASSWORD, ProjectFactory, PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(rater):
    client = APIClient()
    client.force_authenticate(rater)
    return client


def next_task(api, project):
    response = api.post(f"/api/v1/projects/{project.slug}/tasks/next", format="json")
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def submit(api, task, *, next=False, **body):
    body.setdefault("client_submission_id", uuid.uuid4().hex)
    query = "?next=true" if next else ""
    return api.post(f"/api/v1/tasks/{task['task_id']}/judgements{query}", body, format="json")


def in_order(task) -> list[list[int]]:
    return [[response["id"]] for response in task["responses"]]


def test_the_next_task_lists_responses_in_the_raters_order_as_safe_html(api, project, make_task):
    task = make_task(k=3)
    payload = next_task(api, project)
    assignment = Assignment.objects.get()
    assert payload["task_id"] == task.pk
    assert payload["kind"] == "rank" and payload["rate"] is False
    assert [response["id"] for response in payload["responses"]] == assignment.shown_order
    assert [response["label"] for response in payload["responses"]] == ["1", "2", "3"]
    assert payload["conversation"][0]["html"].startswith("<p>Question number")
    assert "gold" not in str(payload)


def test_the_next_task_serves_the_html_stored_by_the_render_job_and_renders_edited_text_again(api, project, make_task):
    task = make_task(k=2)  # written without HTML, as imports write them
    assert services.stored_html_fill() == 3  # the prompt and two responses
    assert services.stored_html_fill() == 0
    first, second = (slot.response for slot in task.slots.order_by("position"))
    assert first.html.startswith("<!--md:") and second.html.startswith("<!--md:")
    # What is stored is what is served: mark a stored copy so that it shows.
    marked = rendering.html_for_storage(first.text).replace("<p>", "<p class=s>")
    Response.objects.filter(pk=first.pk).update(html=marked)
    Response.objects.filter(pk=second.pk).update(text="**edited**")
    html = {response["id"]: response["html"] for response in next_task(api, project)["responses"]}
    assert html[first.pk].startswith("<p class=s>")
    assert html[second.pk] == "<p><strong>edited</strong></p>\n"


def test_responses_and_prompts_made_one_by_one_are_stored_with_their_html(project):
    prompt = services.prompt_create(project=project, messages=[{"role": "user", "content": "*Why?*"}])
    response = services.response_create(prompt=prompt, text="`code`")
    assert rendering.html_from_storage("*Why?*", prompt.messages_html[0]) == "<p><em>Why?</em></p>\n"
    assert response.html == rendering.html_for_storage("`code`")
    assert services.stored_html_fill() == 0


def test_a_pair_is_a_compare_task_labelled_a_and_b(api, project, make_task):
    make_task(k=2)
    payload = next_task(api, project)
    assert payload["kind"] == "compare"
    assert [response["label"] for response in payload["responses"]] == ["A", "B"]


def test_the_rating_loops_bodies_match_their_output_serializers_exactly(api, project, make_task):
    """Next task and submit build their bodies without the serializers (the hot path): the schema still holds."""
    make_task(k=3)
    task = next_task(api, project)
    assert set(task) == set(rating.TaskPayloadOutput().fields)
    assert all(set(response) == set(rating.TaskResponseOutput().fields) for response in task["responses"])
    assert all(set(turn) == set(rating.ConversationTurnOutput().fields) for turn in task["conversation"])
    assert rating.TaskPayloadOutput(data=task).is_valid(), rating.TaskPayloadOutput(data=task).errors
    submitted = submit(api, task, ranking=[[response["id"]] for response in task["responses"]]).json()
    assert set(submitted) == set(rating.JudgementSubmitOutput().fields) - {"next"}
    assert rating.JudgementSubmitOutput(data=submitted).is_valid()
    make_task(k=2)
    task = next_task(api, project)
    submitted = submit(api, task, ranking=[[response["id"]] for response in task["responses"]], next=True).json()
    assert set(submitted) == set(rating.JudgementSubmitOutput().fields) and submitted["next"] is None
    assert rating.JudgementSubmitOutput(data=submitted).is_valid(), rating.JudgementSubmitOutput(data=submitted).errors
    response = api.post(f"/api/v1/projects/{project.slug}/tasks/next", format="json")
    assert response["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_a_submitted_judgement_is_stored_with_its_margin_likert_and_flags(api, project, make_task, rater):
    make_task(k=2)
    task = next_task(api, project)
    a, b = (response["id"] for response in task["responses"])
    response = submit(
        api,
        task,
        ranking=[[b], [a]],
        margin=2,
        likert={str(a): 2, str(b): 6},
        flags={str(a): ["hallucination"]},
        rationale="A invents a date.",
    )
    assert response.status_code == 201, response.content
    stored = Judgement.objects.get()
    assert (stored.rater, stored.ranking, stored.margin) == (rater, [[b], [a]], 2.0)
    assert stored.likert == {str(a): 2, str(b): 6}
    assert stored.flags == {str(a): ["hallucination"]}
    assert stored.shown_order == [a, b]
    assert stored.rationale == "A invents a date."
    assert Assignment.objects.get().state == "submitted"


def test_a_retried_submit_returns_the_stored_judgement_and_stores_nothing_more(api, project, make_task):
    make_task(k=2)
    task = next_task(api, project)
    ids = [[response["id"]] for response in task["responses"]]
    first = submit(api, task, ranking=ids, client_submission_id="same-click")
    again = submit(api, task, ranking=ids, client_submission_id="same-click")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["judgement_id"] == again.json()["judgement_id"]
    assert Judgement.objects.count() == 1


def test_a_submit_answers_with_the_next_task_that_the_next_task_call_then_hands_back(api, project, make_task):
    first, second, third = (make_task(k=3) for _ in range(3))
    task = next_task(api, project)
    assert task["task_id"] == first.pk
    answer = submit(api, task, ranking=in_order(task), next=True)
    assert answer.status_code == 201, answer.content
    following = answer.json()["next"]
    assert following["task_id"] == second.pk
    lease = Assignment.objects.get(task=second)
    assert lease.state == "leased" and [r["id"] for r in following["responses"]] == lease.shown_order
    # The same lease, as the next-task call would have made it: asking again hands back the same task and order.
    assert next_task(api, project) == following
    # A retry of the submission answers with the same next task and leases nothing more.
    again = submit(api, task, ranking=in_order(task), next=True, client_submission_id="retry")
    assert again.status_code == 409  # another submission id on a judged task: refused, as without next
    last = submit(api, following, ranking=in_order(following), next=True, client_submission_id="once").json()
    assert last["next"]["task_id"] == third.pk
    retried = submit(api, following, ranking=in_order(following), next=True, client_submission_id="once")
    assert retried.status_code == 200 and retried.json()["next"] == last["next"]
    assert Assignment.objects.count() == 3 and Judgement.objects.count() == 2
    final = submit(api, last["next"], ranking=in_order(last["next"]), next=True).json()
    assert final["next"] is None  # nothing left: null, as the next-task call's 204


def test_a_submit_with_next_asks_the_database_less_than_submit_then_next_task(api, project, make_task):
    """On PostgreSQL three queries: the rater's assignment with its project and standing, the submit function and
    the lease function (the next-task call reads the project again). SQLite's Python loop reads it again anyway."""
    for _ in range(4):
        make_task(k=2)
    task = next_task(api, project)
    with CaptureQueriesContext(connection) as together:
        task = submit(api, task, ranking=in_order(task), next=True).json()["next"]
    with CaptureQueriesContext(connection) as apart:
        assert submit(api, task, ranking=in_order(task)).status_code == 201
        task = next_task(api, project)
    assert task is not None

    def queries(captured) -> int:  # the test's transaction adds a savepoint around the submit function
        return sum(not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")) for query in captured)

    if connection.vendor == "postgresql":
        assert (queries(together), queries(apart)) == (3, 4)
    else:
        assert queries(together) == queries(apart)


def test_a_rater_taken_out_of_the_project_gets_their_judgement_stored_and_no_next_task(api, project, make_task, rater):
    make_task(k=2), make_task(k=2)
    task = next_task(api, project)
    project.members.remove(rater)
    answer = submit(api, task, ranking=in_order(task), next=True)
    assert answer.status_code == 201 and "next" not in answer.json()
    assert Judgement.objects.filter(rater=rater).count() == 1
    assert api.post(f"/api/v1/projects/{project.slug}/tasks/next").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_posts_of_one_submission_store_one_judgement(rater, make_task, project):
    make_task(k=2)
    lease = services.assignment_lease_next(project=project, rater=rater)
    ranking = [[response_id] for response_id in lease.shown_order]
    barrier = threading.Barrier(4)
    statuses = []

    def post():
        client = APIClient()
        client.force_authenticate(rater)
        barrier.wait()
        try:
            response = client.post(
                f"/api/v1/tasks/{lease.task_id}/judgements",
                {"client_submission_id": "double-click", "ranking": ranking},
                format="json",
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 201]
    assert Judgement.objects.count() == 1


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"ranking": "bad"}, 400, "ranking"),
        ({"ranking": [[-1], [-2]]}, 400, "ranking"),
        ({"ranking": [[10**9], [10**9 + 1]]}, 400, "not part of this task"),
        ({"likert": {"X": 8}}, 400, "likert"),
        ({"flags": {"X": ["boring"]}}, 400, "flags"),
        ({"margin": -1}, 400, "margin"),
        ({"margin": 1e308}, 400, "margin"),  # one judgement must not outweigh the rest of the loss
        ({"margin": 0.5}, 400, "margin"),  # the workbench offers 1, 2 and 3
        ({"client_submission_id": ""}, 400, "client_submission_id"),
    ],
)
def test_bad_submissions_get_a_400_naming_the_problem(api, project, make_task, body, status, message):
    make_task(k=2)
    task = next_task(api, project)
    a, b = (response["id"] for response in task["responses"])
    payload = {"ranking": [[a], [b]], **body}
    if "likert" in body:
        payload["likert"] = {str(a): 8}
    if "flags" in body:
        payload["flags"] = {str(a): ["boring"]}
    response = submit(api, task, **payload)
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"message", "extra"}
    assert message in error["message"]
    assert not Judgement.objects.exists()


def test_a_next_that_is_not_a_boolean_is_a_400_naming_it_and_stores_nothing(api, project, make_task):
    make_task(k=2)
    task = next_task(api, project)
    body = {"client_submission_id": "x", "ranking": in_order(task)}
    response = api.post(f"/api/v1/tasks/{task['task_id']}/judgements?next=maybe", body, format="json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("next:") and response.json()["extra"]["fields"]["next"]
    assert not Judgement.objects.exists()


def test_a_rater_can_not_submit_on_a_task_they_do_not_hold(api, project, make_task, other_rater):
    make_task(k=2)
    project.members.add(other_rater)
    held = services.assignment_lease_next(project=project, rater=other_rater)
    response = api.post(
        f"/api/v1/tasks/{held.task_id}/judgements",
        {"client_submission_id": "x", "ranking": [[i] for i in held.shown_order]},
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["message"] == f"You hold no task {held.task_id}. Ask for your next task."


def test_a_rater_sees_no_project_they_are_not_a_member_of(api, make_task):
    outsider_project = ProjectFactory()
    assert api.post(f"/api/v1/projects/{outsider_project.slug}/tasks/next").status_code == 404
    foreign_task = make_task(k=2, in_project=outsider_project)
    response = api.post(
        f"/api/v1/tasks/{foreign_task.pk}/judgements", {"client_submission_id": "x", "ranking": []}, format="json"
    )
    assert response.status_code == 404


def test_anonymous_visitors_and_non_raters_are_refused(project):
    anonymous = APIClient()
    response = anonymous.post(f"/api/v1/projects/{project.slug}/tasks/next")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    visitor = UserFactory(username="visitor")
    project.members.add(visitor)
    client = APIClient()
    client.force_authenticate(visitor)
    response = client.post(f"/api/v1/projects/{project.slug}/tasks/next")
    assert response.status_code == 403
    assert response.json() == {"message": "This is for raters.", "extra": {}}


def test_a_session_loads_the_raters_role_with_the_user_and_follows_the_group(project, rater, make_task):
    make_task(k=2)
    client = APIClient()
    assert client.login(request=HttpRequest(), username="rater", password=PASSWORD)
    assert client.post(f"/api/v1/projects/{project.slug}/tasks/next").status_code == 200
    rater.groups.clear()  # taken off the raters: refused from the next request on
    assert client.post(f"/api/v1/projects/{project.slug}/tasks/next").status_code == 403
    rater.is_active = False
    rater.save()
    assert client.post(f"/api/v1/projects/{project.slug}/tasks/next").status_code == 401


def test_a_browser_session_must_send_the_csrf_token(project, rater, make_task):
    make_task(k=2)
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(request=HttpRequest(), username="rater", password=PASSWORD)
    assert client.post(f"/api/v1/projects/{project.slug}/tasks/next").status_code == 403
    client.get(f"/p/{project.slug}/")  # the page sets the CSRF cookie the script sends back
    token = client.cookies["csrftoken"].value
    response = client.post(f"/api/v1/projects/{project.slug}/tasks/next", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_nothing_left_is_a_204(api, project):
    assert next_task(api, project) is None


def test_skip_and_report_are_stored(api, project, make_task):
    make_task(k=2)
    make_task(k=2)
    first = next_task(api, project)
    assert api.post(f"/api/v1/tasks/{first['task_id']}/skip", {"reason": ""}, format="json").status_code == 400
    response = api.post(f"/api/v1/tasks/{first['task_id']}/skip", {"reason": "Not my language."}, format="json")
    assert response.status_code == 200
    second = next_task(api, project)
    assert second["task_id"] != first["task_id"]
    response = api.post(f"/api/v1/tasks/{second['task_id']}/problems", {"message": "Empty response."}, format="json")
    assert response.status_code == 201
    assert Assignment.objects.get(task_id=first["task_id"]).skip_reason == "Not my language."
    assert TaskProblemReport.objects.get().message == "Empty response."
    assert next_task(api, project) is None


def test_problems_are_reported_only_on_tasks_the_rater_was_given_and_only_so_many(api, project, make_task, rater):
    never_given = make_task(k=2)
    response = api.post(f"/api/v1/tasks/{never_given.pk}/problems", {"message": "Spam."}, format="json")
    assert response.status_code == 403 and "task you were given" in response.json()["message"]
    assert not TaskProblemReport.objects.exists()

    # The limit counts open reports per project: reports already open fill it, a closed one makes room.
    tasks = [make_task(k=2) for _ in range(2)]
    now = timezone.now()
    for task in tasks:
        Assignment.objects.create(task=task, rater=rater, leased_at=now, expires_at=now + timedelta(minutes=5))
    for _ in range(OPEN_REPORTS_PER_RATER - 1):
        TaskProblemReport.objects.create(task=never_given, rater=rater, message="Earlier.")
    assert api.post(f"/api/v1/tasks/{tasks[0].pk}/problems", {"message": "Cut off."}, format="json").status_code == 201
    refused = api.post(f"/api/v1/tasks/{tasks[1].pk}/problems", {"message": "Cut off."}, format="json")
    assert refused.status_code == 409 and "open problem reports" in refused.json()["message"]
    TaskProblemReport.objects.filter(message="Earlier.").first().delete()
    assert api.post(f"/api/v1/tasks/{tasks[1].pk}/problems", {"message": "Cut off."}, format="json").status_code == 201


def test_demonstrations_are_served_and_taken_only_where_the_project_asks_for_them(api, project):
    prompt = PromptFactory(project=project)
    assert not project.demonstrate_enabled
    assert api.get(f"/api/v1/projects/{project.slug}/demonstrations/next").status_code == 404
    body = {"text": "The ideal reply.", "client_submission_id": "d-1"}
    refused = api.post(f"/api/v1/prompts/{prompt.pk}/demonstrations", body, format="json")
    assert refused.status_code == 404 and "does not ask for demonstrations" in refused.json()["message"]
    assert not Demonstration.objects.exists()


def test_a_rate_only_project_ranks_by_the_likert_scores(api, rater):
    project = ProjectFactory(members=[rater], compare_enabled=False, rank_enabled=False, rate_enabled=True)
    prompt = PromptFactory(project=project)
    services.comparison_task_create(
        project=project, prompt=prompt, responses=ResponseFactory.create_batch(3, prompt=prompt)
    )
    task = next_task(api, project)
    assert task["kind"] == "rate"
    a, b, c = (response["id"] for response in task["responses"])
    assert submit(api, task, likert={str(a): 3}).status_code == 400
    response = submit(api, task, likert={str(a): 3, str(b): 7, str(c): 3})
    assert response.status_code == 201
    assert Judgement.objects.get().ranking == [[b], [a, c]]


def test_demonstrations_are_written_once_per_submission_and_prompt(api, project, rater):
    project.demonstrate_enabled = True
    project.save()
    first, second = PromptFactory.create_batch(2, project=project)
    response = api.get(f"/api/v1/projects/{project.slug}/demonstrations/next")
    assert response.json()["prompt_id"] == first.pk
    assert api.get(f"/api/v1/projects/{project.slug}/demonstrations/next?exclude=").json()["prompt_id"] == first.pk
    assert api.get(f"/api/v1/projects/{project.slug}/demonstrations/next?exclude={first.pk}").json()["prompt_id"] == (
        second.pk
    )
    body = {"text": "The ideal reply.", "client_submission_id": "d-1"}
    assert api.post(f"/api/v1/prompts/{first.pk}/demonstrations", body, format="json").status_code == 201
    assert api.post(f"/api/v1/prompts/{first.pk}/demonstrations", body, format="json").status_code == 200
    assert Demonstration.objects.get().author == rater
    assert api.get(f"/api/v1/projects/{project.slug}/demonstrations/next").json()["prompt_id"] == second.pk
    blank = {"text": "   ", "client_submission_id": "d-2"}
    assert api.post(f"/api/v1/prompts/{second.pk}/demonstrations", blank, format="json").status_code == 400


def test_demonstrations_stay_inside_the_raters_projects(api):
    foreign = Prompt.objects.create(project=ProjectFactory(), messages=[{"role": "user", "content": "Hi"}])
    body = {"text": "Hello!", "client_submission_id": "d"}
    assert api.post(f"/api/v1/prompts/{foreign.pk}/demonstrations", body, format="json").status_code == 404


@pytest.mark.django_db
def test_me_names_the_owner_of_a_token_in_one_query(rater, django_assert_num_queries):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=rater)
    api = APIClient()
    assert api.get("/api/v1/me").status_code in (401, 403)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    with django_assert_num_queries(1):
        answer = api.get("/api/v1/me")
    assert answer.status_code == 200 and answer.json() == {"username": rater.username, "is_staff": False}


SUBMISSIONS = [
    {
        "client_submission_id": "a",
        "ranking": [[1], [2, 3]],
        "margin": 2,
        "likert": {"1": 7},
        "flags": {"2": ["hallucination"]},
    },
    {"client_submission_id": "b", "ranking": None, "all_bad": True, "rationale": "All wrong."},
    {"client_submission_id": "", "ranking": [[0]]},
    {"client_submission_id": "c", "ranking": [["x"], []], "likert": {"1": 9}, "flags": {"1": ["boring"]}},
    {"client_submission_id": "d" * 65, "ranking": [[1]] * 10, "margin": 7, "all_bad": "maybe"},
    {"ranking": "bad", "likert": [], "flags": {"1": "harmful"}},
]


class DeepCopiedInput(rating.JudgementSubmitInput):
    """The same fields with DRF's own deep copies, to compare against."""

    get_fields = serializers.Serializer.get_fields


def validated(serializer_class, body):
    serializer = serializer_class(data=body)
    return (serializer.validated_data, None) if serializer.is_valid() else (None, serializer.errors)


@pytest.mark.parametrize("body", SUBMISSIONS)
def test_the_submit_input_with_shared_nested_fields_answers_as_drfs_deep_copies(body):
    assert validated(rating.JudgementSubmitInput, body) == validated(DeepCopiedInput, body)


def test_the_submit_input_validates_the_same_from_many_threads_at_once():
    expected = [validated(DeepCopiedInput, body) for body in SUBMISSIONS]
    answers, barrier = [], threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        answers.append([validated(rating.JudgementSubmitInput, body) for body in SUBMISSIONS * 50])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [data is not None for data, _ in expected] == [True, True, False, False, False, False]
    assert len(answers) == 8 and all(answer == expected * 50 for answer in answers)
