"""Webhooks: each project's subscriptions (URL, secret, events), and every delivery with its status, the
receiver's response code and a resend action."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from labeling import services
from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError
from labeling.models import Webhook, WebhookDelivery, WebhookEvent


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="Receives a POST with a JSON body per event.")
    events = forms.MultipleChoiceField(
        choices=WebhookEvent.choices, widget=forms.CheckboxSelectMultiple, help_text="The events this URL receives."
    )

    class Meta:
        model = Webhook
        fields = ["project", "url", "events", "secret", "active"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    list_display = ["id", "project", "url", "event_list", "active", "deliveries_link", "created_at"]
    list_filter = ["project", "active"]
    search_fields = ["url"]

    @admin.display(description="events")
    def event_list(self, webhook: Webhook) -> str:
        return ", ".join(webhook.events)

    @admin.display(description="deliveries")
    def deliveries_link(self, webhook: Webhook):
        url = reverse("admin:labeling_webhookdelivery_changelist") + f"?webhook__id__exact={webhook.pk}"
        return format_html('<a href="{}">{}</a>', url, webhook.deliveries.count())

    def save_model(self, request: HttpRequest, obj: Webhook, form, change: bool) -> None:
        if change:
            obj.full_clean()
            obj.save()
            return
        fields = {name: form.cleaned_data[name] for name in ("secret", "active")}
        try:
            created = services.webhook_create(
                project=obj.project, url=obj.url, events=form.cleaned_data["events"], created_by=request.user, **fields
            )
        except ApplicationError as error:
            raise forms.ValidationError(error.message) from error
        obj.pk, obj.created_at, obj.judgements_cursor = created.pk, created.created_at, created.judgements_cursor


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """Every event sent to a webhook. A delivery that failed, or one a receiver lost, can be sent again as it
    was (same body, same delivery id)."""

    list_display = [
        "id", "webhook", "event", "status", "attempts", "response_code", "created_at", "delivered_at",
        "next_attempt_at",
    ]  # fmt: skip
    list_filter = ["status", "event", "webhook__project"]
    search_fields = ["delivery_id", "webhook__url"]
    fields = (
        "webhook", "event", "delivery_id", "status", "attempts", "response_code", "error", "response_body", "body",
        "created_at", "delivered_at", "next_attempt_at",
    )  # fmt: skip
    readonly_fields = fields
    actions = ["resend"]

    def has_resend_permission(self, request: HttpRequest) -> bool:
        """Those who may change webhooks may send their deliveries again."""
        return request.user.has_perm("labeling.change_webhook")

    @admin.action(description="Resend the selected deliveries (same body and delivery id)", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            services.webhook_delivery_resend(delivery=delivery)
        self.message_user(request, f"Queued {queryset.count()} deliveries again.", messages.SUCCESS)
