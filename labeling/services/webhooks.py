"""Webhooks: events become deliveries in the transaction that caused them; a Celery task sends each one, signed,
and tries again with exponential back-off until the receiver answers 2xx or the attempts run out.

Every body is ``{"delivery_id", "event", "created_at", "project": {"id", "slug"}, "data": {...}}``, sent as
stored on every attempt with these headers: ``X-Studio-Event``, ``X-Studio-Delivery`` (the delivery id, the same
on every attempt and on a resend), ``X-Studio-Attempt`` and ``X-Studio-Signature-256: sha256=<hex>``, the
HMAC-SHA256 of the body under the webhook's secret. A receiver checks the signature against the raw body.

Judgements and task completions are announced in batches by a beat job (``webhooks_tick``) rather than on the
rater's submit: it reads the judgements stored since the webhook's cursor and sends one
``judgements.submitted`` per batch and one ``task.completed`` per task whose completing judgement is in it.
The other events are sent as they happen (runs, model versions, pauses: a few a day)."""

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from labeling.errors import ApplicationError
from labeling.models import (
    ComparisonTask,
    DeliveryStatus,
    Judgement,
    JudgementSource,
    Project,
    TaskStatus,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Studio-Signature-256"
BATCH_LIMIT = 1000  # judgements per judgements.submitted event
SETTLE = timedelta(seconds=2)  # a judgement is announced once it is this old: earlier ids have committed by then
RESPONSE_KEPT = 2000  # characters of the receiver's answer kept with the delivery


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_create(*, project: Project, url: str, events: Iterable[str], created_by=None, **fields) -> Webhook:
    """A webhook on ``project``. Its judgement batches start with the judgements stored after it was made."""
    events = list(dict.fromkeys(events))
    unknown = sorted(set(events) - set(WebhookEvent.values))
    if unknown:
        raise ApplicationError(f"Unknown webhook events: {', '.join(unknown)}.", {"events": unknown})
    latest = Judgement.objects.filter(task__project=project).aggregate(latest=Max("id"))["latest"] or 0
    webhook = Webhook(
        project=project, url=url, events=events, created_by=created_by, judgements_cursor=latest, **fields
    )
    webhook.full_clean()
    webhook.save()
    return webhook


def webhook_event_emit(
    *, project: Project | int, event: str, data: dict | Callable[[], dict], now: datetime | None = None
) -> int:
    """A delivery of ``event`` to each active webhook of the project that takes it, sent once the caller's
    transaction commits. Returns how many; one query when the project has none (``data`` may be a function,
    called only when some webhook takes the event)."""
    project_id = project if isinstance(project, int) else project.pk
    webhooks = [
        webhook
        for webhook in Webhook.objects.filter(project_id=project_id, active=True).select_related("project")
        if event in webhook.events
    ]
    if not webhooks:
        return 0
    data = data() if callable(data) else data
    return _deliveries_create(webhooks, event=event, data=data, now=now or timezone.now())


def _deliveries_create(webhooks: list[Webhook], *, event: str, data: dict, now: datetime) -> int:
    deliveries = []
    for webhook in webhooks:
        delivery = WebhookDelivery(webhook=webhook, event=event, next_attempt_at=now)
        delivery.body = orjson.dumps(
            {
                "delivery_id": str(delivery.delivery_id),
                "event": event,
                "created_at": now.isoformat(),
                "project": {"id": webhook.project_id, "slug": webhook.project.slug},
                "data": data,
            }
        ).decode()
        deliveries.append(delivery)
    WebhookDelivery.objects.bulk_create(deliveries)
    ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: _send_later(ids))
    return len(deliveries)


def _send_later(delivery_ids: list[int], attempts: dict[int, int] | None = None) -> None:
    """A task per delivery; it sends only while the delivery has made ``attempts`` attempts (0 for a new one), so
    that a task queued again by ``webhooks_tick`` ends the chain of retries it replaces rather than doubling it."""
    from labeling.tasks import webhook_deliver_task

    for delivery_id in delivery_ids:
        webhook_deliver_task.delay(delivery_id, (attempts or {}).get(delivery_id, 0))


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: the base delay, doubled after each further failure."""
    return timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS * 2 ** (attempts - 1))


def webhook_delivery_attempt(
    *, delivery_id: int, attempts: int | None = None, now: datetime | None = None
) -> WebhookDelivery:
    """POST a pending delivery once. 2xx: delivered. Anything else (an error code, a refused connection, a
    timeout): pending again, due after :func:`retry_delay`, or failed when ``WEBHOOK_MAX_ATTEMPTS`` are spent.
    A delivery that is not pending is left alone, so a task run twice never sends twice, and so is one that has
    made other than ``attempts`` attempts (when given): another task has it. The row stays locked while the
    request is out: a second worker waits, then finds it delivered."""
    import requests

    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().select_related("webhook").get(pk=delivery_id)
        if delivery.status != DeliveryStatus.PENDING or (attempts is not None and delivery.attempts != attempts):
            return delivery
        body = delivery.body.encode()
        delivery.attempts += 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "RLHF-Studio-Webhook/1",
            "X-Studio-Event": delivery.event,
            "X-Studio-Delivery": str(delivery.delivery_id),
            "X-Studio-Attempt": str(delivery.attempts),
            SIGNATURE_HEADER: signature(delivery.webhook.secret, body),
        }
        try:
            answer = requests.post(
                delivery.webhook.url, data=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
                allow_redirects=False,
            )  # fmt: skip
            delivery.response_code, delivery.response_body = answer.status_code, answer.text[:RESPONSE_KEPT]
            delivery.error = "" if answer.ok else f"The receiver answered {answer.status_code}."
        except requests.RequestException as error:
            delivery.response_code, delivery.response_body = None, ""
            delivery.error = f"{type(error).__name__}: {error}"[:RESPONSE_KEPT]
        now = now or timezone.now()
        if delivery.response_code is not None and 200 <= delivery.response_code < 300:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
        elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = now + retry_delay(delivery.attempts)
        delivery.save()
    if delivery.status == DeliveryStatus.FAILED:
        logger.warning(
            "webhook delivery %s failed after %s attempts: %s", delivery.pk, delivery.attempts, delivery.error
        )
    return delivery


def webhook_delivery_resend(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again, as it was (same body and delivery id), with a fresh count of attempts."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now(), error=""
        )
        transaction.on_commit(lambda: _send_later([delivery.pk]))
    delivery.refresh_from_db()
    return delivery


def webhooks_tick(*, now: datetime | None = None) -> int:
    """The beat job: announce the judgements stored since each webhook's cursor (and the tasks they completed),
    and queue again any pending delivery whose retry is long overdue (its task was lost with a broker).
    Returns how many deliveries it made or queued."""
    now = now or timezone.now()
    made = 0
    wanted = (WebhookEvent.JUDGEMENTS_SUBMITTED, WebhookEvent.TASK_COMPLETED)
    for webhook in Webhook.objects.filter(active=True).select_related("project"):
        if any(event in webhook.events for event in wanted):
            made += _announce_judgements(webhook=webhook, now=now)
    overdue = list(
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lt=now - timedelta(minutes=5)
        ).values_list("pk", flat=True)[:BATCH_LIMIT]
    )
    if overdue:
        WebhookDelivery.objects.filter(pk__in=overdue).update(next_attempt_at=now)
        counts = dict(WebhookDelivery.objects.filter(pk__in=overdue).values_list("pk", "attempts"))
        _send_later(overdue, counts)
    return made + len(overdue)


@transaction.atomic
def _announce_judgements(*, webhook: Webhook, now: datetime) -> int:
    webhook = Webhook.objects.select_for_update().select_related("project").get(pk=webhook.pk)
    rows = list(
        Judgement.objects.filter(
            task__project_id=webhook.project_id, id__gt=webhook.judgements_cursor, created_at__lte=now - SETTLE
        )
        .order_by("id")
        .values_list("id", "task_id", "source")[:BATCH_LIMIT]
    )
    if not rows:
        return 0
    first, last = rows[0][0], rows[-1][0]
    made = 0
    if WebhookEvent.JUDGEMENTS_SUBMITTED in webhook.events:
        made += _deliveries_create([webhook], event=WebhookEvent.JUDGEMENTS_SUBMITTED, now=now, data={
            "count": len(rows),
            "first_judgement_id": first,
            "last_judgement_id": last,
            "judgement_ids": [row[0] for row in rows],
            "task_ids": sorted({row[1] for row in rows}),
            "by_source": {source: sum(1 for row in rows if row[2] == source) for source in {row[2] for row in rows}},
        })  # fmt: skip
    if WebhookEvent.TASK_COMPLETED in webhook.events:
        # A task is announced by the batch that holds its last human judgement, so exactly once.
        # One query for the batch's completed tasks, with their last human judgement and their count.
        tasks = ComparisonTask.objects.filter(pk__in={row[1] for row in rows}, status=TaskStatus.COMPLETE).annotate(
            last_human=Max("judgements__id", filter=Q(judgements__source=JudgementSource.HUMAN)),
            judgement_count=Count("judgements"),
        )
        for task in tasks:
            if task.last_human is not None and first <= task.last_human <= last:
                made += _deliveries_create([webhook], event=WebhookEvent.TASK_COMPLETED, now=now, data={
                    "task_id": task.pk, "prompt_id": task.prompt_id, "judgements": task.judgement_count,
                    "required_judgements": task.required_judgements,
                })  # fmt: skip
    Webhook.objects.filter(pk=webhook.pk).update(judgements_cursor=last)
    return made
