"""Webhooks against a real HTTP server on 127.0.0.1: signed JSON bodies, retries with exponential back-off after
an error answer, no second send after success, batches of judgements and completed tasks, the events of runs,
models and pauses, and the admin's delivery list and resend action."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import services
from labeling.errors import ApplicationError
from labeling.models import Judgement, ModelVersion, TrainingRun, WebhookDelivery, WebhookEvent
from labeling.runs.outcomes import model_version_make_current, run_end
from tests.factories import ProjectFactory, PromptFactory, ResponseFactory, UserFactory
from tests.worker import celery_worker

SECRET = "s3cret-for-tests"


class Receiver:
    """A webhook receiver: records every request (headers and raw body) and answers with the next code of
    ``answers`` (then 200)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.requests: list[dict] = []
        self.answers = list(answers or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"thanks" if code < 300 else b"try later")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receivers = []

    def make(answers=None) -> Receiver:
        receivers.append(Receiver(answers))
        return receivers[-1]

    yield make
    for each in receivers:
        each.close()


def verified(request: dict) -> dict:
    """The body, once its signature checks as a receiver would check it."""
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Studio-Signature-256"], expected)
    return json.loads(request["body"])


def webhook(project, url: str, events: list[str]):
    return services.webhook_create(project=project, url=url, events=events, secret=SECRET)


def ranked_task(project, index: int, required: int = 1):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"question {index}"}])
    responses = [ResponseFactory(prompt=prompt, text=f"answer {j} to {index}") for j in range(2)]
    task = services.comparison_task_create(project=project, prompt=prompt, responses=responses)
    task.required_judgements = required
    task.save(update_fields=["required_judgements"])
    return task, [[response.pk] for response in responses]


@pytest.mark.django_db
def test_a_delivery_is_signed_and_carries_its_id_and_event(receiver, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    hook = receiver()
    webhook(project, hook.url, [WebhookEvent.MODEL_CURRENT])
    version = ModelVersion.objects.create(project=project, kind="policy", name="ppo-1", artefact_path="x")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        model_version_make_current(version=version)
    assert len(queued) == 1  # the send is queued for after the commit
    delivery = WebhookDelivery.objects.get()
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).status == "delivered"

    (request,) = hook.requests
    body = verified(request)
    assert request["headers"]["X-Studio-Event"] == "model.current" == body["event"]
    assert request["headers"]["X-Studio-Delivery"] == str(delivery.delivery_id) == body["delivery_id"]
    assert body["project"] == {"id": project.pk, "slug": project.slug}
    assert body["data"]["model_version_id"] == version.pk and body["data"]["is_current"] is True
    delivery.refresh_from_db()
    assert (delivery.response_code, delivery.attempts, delivery.response_body) == (200, 1, "thanks")


@pytest.mark.django_db
def test_an_error_answer_is_tried_again_later_and_later_and_never_after_success(receiver, settings):
    settings.WEBHOOK_RETRY_SECONDS, settings.WEBHOOK_MAX_ATTEMPTS = 10, 5
    project = ProjectFactory()
    hook = receiver([500, 503])
    webhook(project, hook.url, [WebhookEvent.RATER_PAUSED])
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    delivery = WebhookDelivery.objects.get()
    now = timezone.now()
    first = services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
    assert (first.status, first.response_code, first.next_attempt_at) == ("pending", 500, now + timedelta(seconds=10))
    second = services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
    assert (second.status, second.response_code, second.next_attempt_at) == (
        "pending",
        503,
        now + timedelta(seconds=20),
    )
    third = services.webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
    assert (third.status, third.response_code, third.attempts) == ("delivered", 200, 3)
    services.webhook_delivery_attempt(delivery_id=delivery.pk)  # a redelivered task
    assert len(hook.requests) == 3
    assert len({request["body"] for request in hook.requests}) == 1  # the same bytes every time
    assert [request["headers"]["X-Studio-Attempt"] for request in hook.requests] == ["1", "2", "3"]


@pytest.mark.django_db
def test_a_task_whose_delivery_another_task_took_over_sends_nothing(receiver):
    project = ProjectFactory()
    hook = receiver([500])
    webhook(project, hook.url, [WebhookEvent.RATER_PAUSED])
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    delivery = WebhookDelivery.objects.get()
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, attempts=0).attempts == 1  # the 500
    stale = services.webhook_delivery_attempt(delivery_id=delivery.pk, attempts=0)  # an older chain wakes up
    assert stale.attempts == 1 and len(hook.requests) == 1
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk, attempts=1).status == "delivered"
    assert len(hook.requests) == 2


@pytest.mark.django_db
def test_a_receiver_that_never_answers_well_fails_the_delivery_after_the_last_attempt(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    project = ProjectFactory()
    hook = receiver([500, 500, 500, 500])
    webhook(project, hook.url, [WebhookEvent.RATER_PAUSED])
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    delivery = WebhookDelivery.objects.get()
    for _ in range(4):
        services.webhook_delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(hook.requests)) == ("failed", 3, 3)
    assert delivery.error == "The receiver answered 500."
    closed = Receiver()
    closed.close()  # nothing listens there any more
    webhook(project, closed.url, [WebhookEvent.RATER_PAUSED])
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    refused = services.webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.latest("id").pk)
    assert refused.status == "pending" and refused.response_code is None and "ConnectionError" in refused.error


@pytest.mark.django_db
def test_only_the_projects_active_webhooks_that_take_the_event_get_it():
    project, other = ProjectFactory(), ProjectFactory()
    takes = webhook(project, "http://127.0.0.1:9/a", [WebhookEvent.RATER_PAUSED])
    webhook(project, "http://127.0.0.1:9/b", [WebhookEvent.RUN_FAILED])
    webhook(other, "http://127.0.0.1:9/c", [WebhookEvent.RATER_PAUSED])
    inactive = webhook(project, "http://127.0.0.1:9/d", [WebhookEvent.RATER_PAUSED])
    inactive.active = False
    inactive.save()
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    assert list(WebhookDelivery.objects.values_list("webhook", "event")) == [(takes.pk, "rater.paused")]
    with pytest.raises(ApplicationError, match="Unknown webhook events: run.exploded"):
        webhook(project, "http://127.0.0.1:9/e", ["run.exploded"])


@pytest.mark.django_db
def test_runs_announce_their_start_end_and_failure_and_models_their_registration():
    project = ProjectFactory()
    webhook(project, "http://127.0.0.1:9/runs", [WebhookEvent.RUN_FAILED, WebhookEvent.RUN_STARTED])
    run = TrainingRun.objects.create(project=project, kind="reward", status="running", started_at=timezone.now())
    run_end(run, TrainingRun.Status.FAILED, error="out of memory")
    cancelled = TrainingRun.objects.create(project=project, kind="reward", status="running")
    run_end(cancelled, TrainingRun.Status.CANCELLED)
    (delivery,) = WebhookDelivery.objects.all()
    data = json.loads(delivery.body)["data"]
    assert (delivery.event, data["run_id"], data["status"], data["error"]) == (
        "run.failed",
        run.pk,
        "failed",
        "out of memory",
    )


@pytest.mark.django_db
def test_judgements_are_announced_in_batches_with_the_tasks_they_complete(settings):
    project = ProjectFactory()
    hook = webhook(project, "http://127.0.0.1:9/j", [WebhookEvent.JUDGEMENTS_SUBMITTED, WebhookEvent.TASK_COMPLETED])
    done, ranking = ranked_task(project, 1, required=1)
    half, half_ranking = ranked_task(project, 2, required=2)
    first = services.judgement_create(task=done, ranking=ranking, client_submission_id="a", rater=UserFactory())
    second = services.judgement_create(task=half, ranking=half_ranking, client_submission_id="b", rater=UserFactory())
    later = timezone.now() + timedelta(seconds=5)
    assert services.webhooks_tick(now=timezone.now() - timedelta(seconds=5)) == 0  # not settled yet
    assert services.webhooks_tick(now=later) == 2
    batch = json.loads(WebhookDelivery.objects.get(event="judgements.submitted").body)["data"]
    assert batch["judgement_ids"] == [first.pk, second.pk] and batch["count"] == 2
    assert batch["task_ids"] == sorted([done.pk, half.pk]) and batch["by_source"] == {"human": 2}
    completed = json.loads(WebhookDelivery.objects.get(event="task.completed").body)["data"]
    assert completed["task_id"] == done.pk and completed["judgements"] == 1
    assert services.webhooks_tick(now=later) == 0  # nothing new: nothing sent twice
    third = services.judgement_create(task=half, ranking=half_ranking, client_submission_id="c", rater=UserFactory())
    assert services.webhooks_tick(now=timezone.now() + timedelta(seconds=5)) == 2
    completed = json.loads(WebhookDelivery.objects.filter(event="task.completed").latest("id").body)["data"]
    assert completed["task_id"] == half.pk
    hook.refresh_from_db()
    assert hook.judgements_cursor == third.pk == Judgement.objects.latest("id").pk


@pytest.mark.django_db
def test_a_webhook_made_after_judgements_announces_only_later_ones():
    project = ProjectFactory()
    task, ranking = ranked_task(project, 1)
    services.judgement_create(task=task, ranking=ranking, client_submission_id="old", rater=UserFactory())
    webhook(project, "http://127.0.0.1:9/j", [WebhookEvent.JUDGEMENTS_SUBMITTED])
    assert services.webhooks_tick(now=timezone.now() + timedelta(seconds=5)) == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_delivers_with_retries_and_stops_after_success(receiver, settings, tmp_path):
    project = ProjectFactory()
    hook = receiver([500, 502])
    webhook(project, hook.url, [WebhookEvent.RATER_PAUSED])
    with celery_worker(tmp_path, environment={"WEBHOOK_RETRY_SECONDS": "0.5"}) as worker:
        settings.CELERY_TASK_DEFAULT_QUEUE = worker.queue
        services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")  # commits: the task goes
        deadline = time.monotonic() + 60
        while WebhookDelivery.objects.get().status == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # room for a wrong fourth send
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200), worker.log()
    assert len(hook.requests) == 3 and all(verified(request)["event"] == "rater.paused" for request in hook.requests)
    assert {request["headers"]["X-Studio-Delivery"] for request in hook.requests} == {str(delivery.delivery_id)}


@pytest.mark.django_db
def test_the_admin_lists_deliveries_and_resends_one_as_it_was(admin_client, receiver, client, rater):
    project = ProjectFactory()
    hook = receiver([500])
    webhook(project, hook.url, [WebhookEvent.RATER_PAUSED])
    services.rater_pause(project=project, rater=UserFactory(), reason="gold tasks")
    delivery = WebhookDelivery.objects.get()
    services.webhook_delivery_attempt(delivery_id=delivery.pk)
    page = admin_client.get(reverse("admin:labeling_webhookdelivery_changelist")).content.decode()
    assert "rater.paused" in page and "500" in page
    response = admin_client.post(
        reverse("admin:labeling_webhookdelivery_changelist"),
        {"action": "resend", "_selected_action": [delivery.pk]},
    )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).status == "delivered"
    assert len({request["body"] for request in hook.requests}) == 1  # resent as it was
    client.force_login(rater)
    assert client.get(reverse("admin:labeling_webhookdelivery_changelist")).status_code == 302  # to the login


@pytest.mark.django_db
def test_the_admin_makes_a_webhook_with_its_events(admin_client):
    project = ProjectFactory()
    response = admin_client.post(
        reverse("admin:labeling_webhook_add"),
        {"project": project.pk, "url": "https://ci.example.org/hooks/studio", "secret": "abc", "active": "on",
         "events": ["run.finished", "model.current"]},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[-1500:]
    (created,) = project.webhooks.all()
    assert created.events == ["run.finished", "model.current"] and created.secret == "abc"
