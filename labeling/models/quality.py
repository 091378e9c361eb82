"""Where a rater stands on a project (paused by the gold rule, reinstated), their audited figures there, the
project's agreement, and the review queue of tasks whose judgements disagree."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models.constraints import in_choices
from labeling.models.content import ComparisonTask, Project


class RaterStanding(models.Model):
    """A rater's standing on one project. No row: in good standing, never paused there."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rater_standings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="standings")
    paused = models.BooleanField(default=False, help_text="A paused rater gets no new task on this project.")
    reason = models.TextField(blank=True, help_text="Why the rater was paused, as they and the admins see it.")
    paused_at = models.DateTimeField(null=True, blank=True)
    reinstated_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When an admin last reinstated the rater: the gold rule counts only gold tasks judged since.",
    )
    reinstated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "rater"]
        constraints = [
            models.UniqueConstraint(fields=["project", "rater"], name="rater_standing_once_per_project"),
            models.CheckConstraint(
                condition=Q(paused=False) | Q(paused_at__isnull=False),
                name="rater_standing_paused_has_time",
                violation_error_message="A paused rater has the time they were paused.",
            ),
        ]

    def __str__(self) -> str:
        state = "paused" if self.paused else "in good standing"
        return f"{self.rater} on {self.project}: {state}"


class RaterStats(models.Model):
    """A rater's audited figures on a project, as the last refresh computed them (labeling.quality.rater_audit):
    what the raters dashboard lists, sorts and filters without reading a single judgement."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rater_stats")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rater_stats")
    judgements = models.PositiveIntegerField(default=0)
    compared = models.PositiveIntegerField(default=0, help_text="Two-response tasks ordered strictly.")
    gold_count = models.PositiveIntegerField(default=0)
    gold_mean = models.FloatField(null=True, blank=True)
    gold_low = models.FloatField(default=0.0)
    gold_high = models.FloatField(default=1.0)
    position_share = models.FloatField(null=True, blank=True, help_text="Chose the response shown first.")
    position_p = models.FloatField(default=1.0)
    length_share = models.FloatField(null=True, blank=True, help_text="Chose the longer response.")
    length_p = models.FloatField(default=1.0)
    median_seconds = models.FloatField(null=True, blank=True)
    fast_share = models.FloatField(null=True, blank=True, help_text="Faster than the text can be read.")
    tie_rate = models.FloatField(default=0.0)
    all_bad_rate = models.FloatField(default=0.0)
    pairwise_agreement = models.FloatField(null=True, blank=True, help_text="With each other rater, per task.")
    consensus_agreement = models.FloatField(
        null=True, blank=True, help_text="With the majority of the other raters of a task (leave-one-out)."
    )
    reward_agreement = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of the pairs of this rater's judgements held out by the current reward model that it "
        "orders as the rater did.",
    )
    alpha = models.FloatField(
        null=True,
        blank=True,
        help_text="Krippendorff's α (ordinal) over the tasks this rater judged.",
    )
    kendall_tau_b = models.FloatField(
        null=True, blank=True, help_text="Mean Kendall's τ-b with the other raters of their tasks of three or more."
    )
    weight = models.FloatField(
        default=1.0,
        help_text="The rater's weight in the ranking export and so in reward training (labeling.audit.trust_weights): "
        "1 for a typical rater, 0 for one no better than chance.",
    )
    flag_count = models.PositiveSmallIntegerField(default=0)
    details = models.JSONField(
        default=dict, blank=True, help_text="Everything the audit computed: flags, weekly series, test p-values."
    )
    refreshed_at = models.DateTimeField()

    class Meta:
        ordering = ["project", "rater"]
        constraints = [models.UniqueConstraint(fields=["project", "rater"], name="rater_stats_once_per_project")]
        verbose_name_plural = "rater stats"

    def __str__(self) -> str:
        return f"{self.rater} on {self.project}"

    @property
    def flags(self) -> list[str]:
        return list(self.details.get("flags", []))

    @property
    def weekly(self) -> list[dict]:
        return list(self.details.get("weekly", []))


class ProjectAgreement(models.Model):
    """How far the project's raters agree, as the last audit refresh computed it (labeling.agreement): α, τ-b
    and their bootstrap intervals, overall and for each recent week."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="agreement")
    figures = models.JSONField(default=dict, help_text='{"alpha": {...}, "kendall_tau_b": {...}, "weeks": [...]}')
    refreshed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Agreement on {self.project}"


class ReviewItemStatus(models.TextChoices):
    OPEN = "open", "Waiting for a reviewer"
    DECIDED = "decided", "Decided"
    SENT_BACK = "sent_back", "Sent back for more judgements"


class ReviewItem(models.Model):
    """A task whose judgements disagree, in the review queue: a reviewer records the final ranking (which then
    is the task's consensus) or sends it back for more judgements."""

    Status = ReviewItemStatus

    task = models.OneToOneField(ComparisonTask, on_delete=models.CASCADE, related_name="review")
    reason = models.TextField(help_text="Why the task needs a reviewer, with the figures.")
    status = models.CharField(max_length=16, choices=ReviewItemStatus.choices, default=ReviewItemStatus.OPEN)
    ranking = models.JSONField(
        null=True, blank=True, help_text="The reviewer's final ranking: groups of response ids, best first."
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=in_choices("status", ReviewItemStatus), name="review_item_status_valid"),
            models.CheckConstraint(
                condition=~Q(status="decided") | Q(ranking__isnull=False),
                name="review_item_decided_has_ranking",
                violation_error_message="A decided review has its final ranking.",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="review_item_queue")]

    def __str__(self) -> str:
        return f"Review of {self.task} ({self.get_status_display()})"


class RewardCheck(models.Model):
    """How a reward model orders the pairs of one judgement it held out from training: what each rater's
    agreement with the current reward model is measured on (judgements it trained on would flatter them)."""

    model_version = models.ForeignKey("ModelVersion", on_delete=models.CASCADE, related_name="reward_checks")
    judgement = models.ForeignKey("Judgement", on_delete=models.CASCADE, related_name="reward_checks")
    agreed = models.FloatField(help_text="Pairs the model orders as the judgement does (a tie in reward: half).")
    pairs = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "judgement"], name="reward_check_once_per_judgement"),
            models.CheckConstraint(
                condition=Q(agreed__gte=0.0) & Q(agreed__lte=models.F("pairs")), name="reward_check_agreed_in_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} on judgement {self.judgement_id}"
