"""Raters' standing on a project: gold tasks first for new raters, the gold rule that pauses a rater whose
scores show they cannot be trusted, and an admin's pause and reinstatement. A paused rater gets no new task on
the project, and their judgements there are marked, so that exports leave them out unless asked."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Avg, Count, F, OuterRef, Q, Subquery
from django.utils import timezone

from labeling import quality, selectors
from labeling.errors import ApplicationError, PermissionDenied
from labeling.models import (
    Assignment,
    Judgement,
    Project,
    ProjectAgreement,
    RaterStanding,
    RaterStats,
    User,
    WebhookEvent,
)
from labeling.services.reviews import review_queue_refresh
from labeling.services.webhooks import webhook_event_emit


class RaterPaused(PermissionDenied):
    """The rater is paused on the project: no new task until an admin reinstates them."""


@dataclass(frozen=True)
class GoldRecord:
    """A rater's gold tasks on a project: how many, the mean score and its 95% Wilson interval."""

    count: int
    mean: float | None
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "low": self.low, "high": self.high}


def gold_record(*, project: Project, rater: User, since: datetime | None = None) -> GoldRecord:
    """The rater's gold record on the project (gold tasks judged at or after ``since``, when given): one
    aggregate query."""
    judgements = Judgement.objects.filter(task__project=project, rater=rater, gold_score__isnull=False)
    if since is not None:
        judgements = judgements.filter(created_at__gte=since)
    figures = judgements.aggregate(count=Count("id"), mean=Avg("gold_score"))
    count, mean = figures["count"], figures["mean"]
    low, high = quality.wilson_interval(mean or 0.0, count)
    return GoldRecord(count=count, mean=mean, low=low, high=high)


def wants_gold_first(*, project: Project, rater: User) -> bool:
    """Whether the rater is still within their first ``gold_first_tasks`` tasks on the project (counting every
    task they ever held there), so that their next task should be a gold one."""
    first = project.gold_first_tasks
    if first == 0:
        return False
    held = Assignment.objects.filter(rater=rater, task__project=project).values("id")[:first]
    return held.count() < first


def standing_of(*, project: Project, rater: User) -> RaterStanding | None:
    return RaterStanding.objects.filter(project=project, rater=rater).first()


def rater_refuse_if_paused(*, project: Project, rater: User) -> None:
    """Raise :class:`RaterPaused` with the reason when the rater is paused on the project."""
    standing = RaterStanding.objects.filter(project=project, rater=rater, paused=True).first()
    if standing is not None:
        raise RaterPaused(
            f"You are paused on {project.name}: {standing.reason} An administrator can reinstate you.",
            {"paused_at": standing.paused_at.isoformat() if standing.paused_at else None},
        )


def rater_is_paused(*, project: Project, rater: User) -> bool:
    return RaterStanding.objects.filter(project=project, rater=rater, paused=True).exists()


@transaction.atomic
def rater_pause(*, project: Project, rater: User, reason: str, now: datetime | None = None) -> RaterStanding:
    """Pause the rater on the project (no new tasks) and mark their judgements there. Pausing a paused rater
    changes nothing."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why the rater is paused.", {"fields": {"reason": ["This field is required."]}})
    now = now or timezone.now()
    standing, _ = RaterStanding.objects.select_for_update().get_or_create(project=project, rater=rater)
    if standing.paused:
        return standing
    standing.paused, standing.reason, standing.paused_at = True, reason[:2000], now
    standing.save(update_fields=["paused", "reason", "paused_at", "updated_at"])
    Judgement.objects.filter(task__project=project, rater=rater).update(rater_paused=True)
    webhook_event_emit(
        project=project, event=WebhookEvent.RATER_PAUSED,
        data={"rater": rater.username, "rater_id": rater.pk, "reason": standing.reason, "paused_at": now.isoformat()},
    )  # fmt: skip
    return standing


@transaction.atomic
def rater_reinstate(*, project: Project, rater: User, by: User | None, now: datetime | None = None) -> RaterStanding:
    """Lift a pause: the rater gets tasks again, their judgements count again, and the gold rule starts a new
    record from now (the gold tasks before the reinstatement no longer count towards a pause)."""
    standing = RaterStanding.objects.select_for_update().filter(project=project, rater=rater).first()
    if standing is None or not standing.paused:
        raise ApplicationError(f"{rater} is not paused on {project.name}.")
    standing.paused = False
    standing.reinstated_at = now or timezone.now()
    standing.reinstated_by = by
    standing.save(update_fields=["paused", "reinstated_at", "reinstated_by", "updated_at"])
    Judgement.objects.filter(task__project=project, rater=rater).update(rater_paused=False)
    return standing


def gold_rule_apply(*, project: Project, rater: User, now: datetime | None = None) -> RaterStanding | None:
    """After a gold judgement: pause the rater when the project's gold rule says so (at least ``gold_min_count``
    gold tasks since their last reinstatement, and the upper end of their score's interval under
    ``gold_min_score``). The standing when the rater was paused now, else None."""
    if project.gold_min_score <= 0.0:
        return None
    standing = standing_of(project=project, rater=rater)
    if standing is not None and standing.paused:
        return None
    since = standing.reinstated_at if standing is not None else None
    record = gold_record(project=project, rater=rater, since=since)
    if record.count < max(project.gold_min_count, 1) or record.high >= project.gold_min_score:
        return None
    reason = (
        f"your mean score on {record.count} gold tasks is {record.mean:.2f} (95% interval {record.low:.2f} to "
        f"{record.high:.2f}), under the project's minimum of {project.gold_min_score:.2f}."
    )
    return rater_pause(project=project, rater=rater, reason=reason[0].upper() + reason[1:], now=now)


def rater_stats_refresh(*, project: Project, now: datetime | None = None) -> int:
    """Audit the project's raters again from every human judgement (labeling.audit, labeling.agreement) and store
    one row per rater and the project's agreement; the rows of raters with no judgement left go. Returns how many
    raters were audited."""
    # numpy and scipy's statistics: loaded by the jobs that audit, not by every page
    from labeling import agreement, audit

    now = now or timezone.now()
    rules = quality.audit_rules(project.audit_rules)
    columns = selectors.judgement_columns(project=project)
    figures = audit.rater_audit(columns, rules)
    inputs = selectors.agreement_inputs(project=project, rater=columns.rater, task=columns.task, week=columns.week)
    inputs.same, inputs.others = audit.pairwise_counts(columns)
    del columns  # the rest of the columns: the agreement's own inputs take their place
    overall, by_rater = agreement.agreement(inputs)
    del inputs
    for rater_id, row in figures.items():
        row["agreement"] = by_rater.get(rater_id, {})
        row["alpha"] = row["agreement"].get("alpha", {}).get("value")
        row["kendall_tau_b"] = row["agreement"].get("kendall_tau_b", {}).get("value")
    for rater_id, (agreed, pairs) in selectors.reward_agreement(project=project).items():
        if rater_id in figures:
            figures[rater_id]["reward_agreement"] = agreed / pairs if pairs else None
            figures[rater_id]["reward_pairs"] = pairs
    for row in figures.values():
        row.setdefault("reward_agreement", None)
        row.setdefault("reward_pairs", 0)
    for rater_id, weight in audit.trust_weights(figures).items():
        figures[rater_id]["weight"] = weight
    rows = [
        RaterStats(
            project=project,
            rater_id=rater_id,
            refreshed_at=now,
            flag_count=len(row["flags"]),
            details={name: row[name] for name in DETAILS},
            **{name: row[name] for name in COLUMNS},
        )
        for rater_id, row in figures.items()
    ]
    with transaction.atomic():
        RaterStats.objects.filter(project=project).exclude(rater_id__in=list(figures)).delete()
        RaterStats.objects.bulk_create(
            rows,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["project", "rater"],
            update_fields=[*COLUMNS, "flag_count", "details", "refreshed_at"],
        )
        ProjectAgreement.objects.update_or_create(project=project, defaults={"figures": overall, "refreshed_at": now})
    return len(rows)


COLUMNS = [
    "judgements", "compared", "gold_count", "gold_mean", "gold_low", "gold_high", "position_share", "position_p",
    "length_share", "length_p", "median_seconds", "fast_share", "tie_rate", "all_bad_rate", "pairwise_agreement",
    "consensus_agreement", "alpha", "kendall_tau_b", "weight", "reward_agreement",
]  # fmt: skip
DETAILS = ["flags", "weekly", "project_length_share", "pairwise_pairs", "consensus_tasks", "agreement", "reward_pairs"]


def rater_stats_refresh_due(*, now: datetime | None = None) -> list[int]:
    """Refresh the audit and the review queue of every project with a human judgement newer than its last refresh
    (the beat job); the ids of the projects refreshed."""
    now = now or timezone.now()
    last = RaterStats.objects.filter(project=OuterRef("pk")).order_by("-refreshed_at").values("refreshed_at")[:1]
    newest = (
        Judgement.objects.filter(task__project=OuterRef("pk"), source=Judgement.Source.HUMAN, rater__isnull=False)
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    due = Project.objects.annotate(last=Subquery(last), newest=Subquery(newest)).filter(newest__isnull=False)
    due = due.filter(Q(last__isnull=True) | Q(newest__gte=F("last")))
    refreshed = []
    for project in due:
        rater_stats_refresh(project=project, now=now)
        review_queue_refresh(project=project, now=now)
        refreshed.append(project.pk)
    return refreshed
