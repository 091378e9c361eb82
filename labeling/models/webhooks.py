"""Webhooks: a project's subscriptions to its events, and every delivery made to them."""

import secrets
import uuid

from django.conf import settings
from django.db import models

from labeling.models.content import Project


class WebhookEvent(models.TextChoices):
    JUDGEMENTS_SUBMITTED = "judgements.submitted", "Judgements submitted (in batches)"
    TASK_COMPLETED = "task.completed", "Task completed"
    RUN_STARTED = "run.started", "Training run started"
    RUN_FINISHED = "run.finished", "Training run finished"
    RUN_FAILED = "run.failed", "Training run failed"
    MODEL_REGISTERED = "model.registered", "Model version registered"
    MODEL_CURRENT = "model.current", "Model version made current"
    RATER_PAUSED = "rater.paused", "Rater paused"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Webhook(models.Model):
    """Where a project's events are POSTed, signed with ``secret`` (HMAC-SHA256 of the body).
    ``judgements_cursor`` is the last judgement id already announced: batches start after it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500, help_text="Receives a POST with a JSON body for each event.")
    secret = models.CharField(
        max_length=200,
        default=new_secret,
        help_text="Signs each body: the X-Studio-Signature-256 header is sha256=HMAC-SHA256(secret, body) in hex.",
    )
    events = models.JSONField(default=list, help_text="The events this URL receives.")
    active = models.BooleanField(default=True)
    judgements_cursor = models.BigIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "id"]

    def __str__(self) -> str:
        return f"{self.project.slug} → {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event sent to one webhook: the exact body, and what each attempt got back. ``delivery_id`` goes in
    the body and the X-Studio-Delivery header, the same on every attempt and on a resend, so that a receiver
    can drop what it already has."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id}"
