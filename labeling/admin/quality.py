"""Raters' standing on projects: who is paused, why and since when, with their gold record; admins reinstate."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError
from labeling.models import ProjectAgreement, RaterStanding, RaterStats, ReviewItem, RewardCheck, User
from labeling.services import quality


@admin.register(RaterStanding)
class RaterStandingAdmin(ReadOnlyAdmin):
    list_display = ["rater", "project", "paused", "reason", "paused_at", "gold", "reinstated_at", "reinstated_by"]
    list_filter = ["paused", "project"]
    search_fields = ["rater__username", "reason"]
    list_select_related = ["rater", "project", "reinstated_by"]
    actions = ["reinstate"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a pause ends by reinstatement, which also counts the rater's judgements again

    @admin.display(description="Gold tasks since reinstated: count, mean (95% interval)")
    def gold(self, standing: RaterStanding) -> str:
        record = quality.gold_record(project=standing.project, rater=standing.rater, since=standing.reinstated_at)
        if not record.count:
            return "none"
        return f"{record.count}, {record.mean:.2f} ({record.low:.2f} to {record.high:.2f})"

    @admin.action(description="Reinstate the chosen raters (they get tasks again; their judgements count again)")
    def reinstate(self, request: HttpRequest, queryset: QuerySet[RaterStanding]) -> None:
        done = 0
        for standing in queryset.select_related("project", "rater"):
            try:
                admin_user = request.user if isinstance(request.user, User) else None
                quality.rater_reinstate(project=standing.project, rater=standing.rater, by=admin_user)
                done += 1
            except ApplicationError as error:
                self.message_user(request, error.message, messages.WARNING)
        if done:
            self.message_user(request, f"Reinstated {done} rater{'s' if done != 1 else ''}.", messages.SUCCESS)


@admin.register(RaterStats)
class RaterStatsAdmin(ReadOnlyAdmin):
    """The audit's rows as stored; the raters dashboard of each project shows them with charts and rules."""

    list_display = [
        "rater", "project", "judgements", "gold_mean", "position_share", "length_share", "median_seconds",
        "consensus_agreement", "flag_count", "refreshed_at",
    ]  # fmt: skip
    list_filter = ["project"]
    search_fields = ["rater__username"]
    list_select_related = ["rater", "project"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the refresh writes and removes these rows


@admin.register(ProjectAgreement)
class ProjectAgreementAdmin(ReadOnlyAdmin):
    """Each project's agreement as the last refresh computed it; its raters dashboard shows it week by week."""

    list_display = ["project", "alpha", "kendall_tau_b", "refreshed_at"]
    search_fields = ["project__name"]
    list_select_related = ["project"]

    @admin.display(description="α (95% interval)")
    def alpha(self, row: ProjectAgreement) -> str:
        return _figure(row.figures.get("alpha"))

    @admin.display(description="τ-b (95% interval)")
    def kendall_tau_b(self, row: ProjectAgreement) -> str:
        return _figure(row.figures.get("kendall_tau_b"))

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the refresh writes these rows


def _figure(figure: dict | None) -> str:
    if not figure or figure.get("value") is None:
        return "–"
    if figure.get("low") is None:
        return f"{figure['value']:.2f}"
    return f"{figure['value']:.2f} ({figure['low']:.2f} to {figure['high']:.2f})"


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdmin):
    """The review queue as stored: reviewers settle items on their page; here admins watch it."""

    list_display = ["task", "status", "reason", "decided_by", "decided_at", "created_at"]
    list_filter = ["status", "task__project"]
    search_fields = ["reason"]
    list_select_related = ["task__project", "decided_by"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a decided review is the task's consensus; the scan writes the rest


@admin.register(RewardCheck)
class RewardCheckAdmin(ReadOnlyAdmin):
    """Each reward model's verdict on the judgements it held out: what raters' agreement with it is read from."""

    list_display = ["model_version", "judgement", "agreed", "pairs"]
    list_filter = ["model_version__project"]
    search_fields = ["model_version__name"]
    list_select_related = ["model_version", "judgement"]
    raw_id_fields = ["judgement"]
