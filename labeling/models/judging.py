"""The raters' work on tasks: assignments (leases), judgements and problem reports."""

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from labeling import validation
from labeling.models.constraints import in_choices
from labeling.models.content import ComparisonTask

if TYPE_CHECKING:
    from labeling.selectors import TaskContent


class AssignmentState(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """A rater's lease on a task. A rater holds at most one assignment per task."""

    State = AssignmentState

    # db_index=False: the unique (task, rater) index already serves lookups by task.
    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="assignments", db_index=False)
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LEASED)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    shown_order = models.JSONField(
        default=list, blank=True, help_text="The task's response ids in the order this rater is shown them."
    )
    skip_reason = models.TextField(blank=True)

    # The task's content, when the lease call read it with the lease (PostgreSQL's one round trip); not stored.
    content: "TaskContent | None" = None
    # Whether the rater is paused on the task's project, when selectors.assignment_of_rater read it; not stored.
    rater_paused: bool | None = None

    class Meta:
        ordering = ["-leased_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "rater"],
                name="assignment_one_per_rater_and_task",
                violation_error_message="This rater already holds an assignment for this task.",
            ),
            models.CheckConstraint(condition=in_choices("state", AssignmentState), name="assignment_state_valid"),
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("leased_at")), name="assignment_expires_after_lease"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "expires_at"], name="assignment_state_expiry"),
            models.Index(fields=["rater", "task"], name="assignment_rater_task"),
            # A rater's latest lease: where a walk in priority order goes on from (the task order's cursor).
            models.Index(fields=["rater", "leased_at"], name="assignment_rater_leased"),
            # A rater's live lease, whatever their history: the first look of every "next task".
            models.Index(fields=["rater"], condition=Q(state="leased"), name="assignment_live_by_rater"),
        ]

    def __str__(self) -> str:
        return f"{self.rater} on {self.task} ({self.state})"


class JudgementSource(models.TextChoices):
    HUMAN = "human", "Human"
    AI = "ai", "AI feedback"


class Flag(models.TextChoices):
    """The problems InstructGPT's labellers could mark on a response."""

    FAILS_INSTRUCTION = "fails_instruction", "Fails to follow the instruction"
    HALLUCINATION = "hallucination", "Hallucination"
    INAPPROPRIATE_FOR_ASSISTANT = "inappropriate_for_assistant", "Inappropriate for a customer assistant"
    SEXUAL_CONTENT = "sexual_content", "Sexual content"
    VIOLENT_CONTENT = "violent_content", "Violent content"
    ENCOURAGES_HARM = "encourages_harm", "Encourages violence, abuse or self-harm"
    DENIGRATES_PROTECTED_CLASS = "denigrates_protected_class", "Denigrates a protected class"
    HARMFUL_ADVICE = "harmful_advice", "Gives harmful advice"
    MORAL_JUDGEMENT = "moral_judgement", "Expresses a moral judgement"


class Judgement(models.Model):
    """One rater's (or the AI labeller's) verdict on a task.

    ``ranking`` is an ordered list of groups of response ids, best first; responses in one group are tied.
    ``likert`` maps response id to 1..7; ``flags`` maps response id to a list of :class:`Flag` values.
    """

    Source = JudgementSource
    Flag = Flag

    # db_index=False: the (task, source) index already serves lookups by task.
    task = models.ForeignKey(ComparisonTask, on_delete=models.PROTECT, related_name="judgements", db_index=False)
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="judgements",
        help_text="Empty for AI labels and for judgements imported from another dataset.",
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.HUMAN)
    origin = models.CharField(
        max_length=200,
        blank=True,
        help_text="For a judgement with no rater: the AI labeller's model, or the dataset it was imported from.",
    )
    # blank=True: clean() checks the ranking against the task and says what is wrong with it.
    ranking = models.JSONField(
        blank=True, help_text="Groups of response ids, best first; a group holds tied responses."
    )
    margin = models.FloatField(
        null=True, blank=True, help_text="How much better the winner is: 1 to 3 from raters, 0 to 3 imported."
    )
    all_bad = models.BooleanField(default=False, help_text="The rater found every response unacceptable.")
    likert = models.JSONField(default=dict, blank=True, help_text="Response id to a score from 1 to 7.")
    flags = models.JSONField(default=dict, blank=True, help_text="Response id to a list of flags.")
    rationale = models.TextField(blank=True)
    seconds_spent = models.FloatField(null=True, blank=True)
    shown_order = models.JSONField(default=list, blank=True, help_text="Response ids in the order shown.")
    client_submission_id = models.CharField(
        max_length=64,
        help_text="Chosen by the client once per submission, so a retried submit is stored once.",
    )
    probability = models.FloatField(
        null=True,
        blank=True,
        help_text="For soft (AI) labels: the probability that the first group is preferred.",
    )
    principle = models.ForeignKey(
        "Principle",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="judgements",
        help_text="For AI feedback: the principle the labeller was asked about.",
    )
    gold_score = models.FloatField(
        null=True,
        blank=True,
        editable=False,
        help_text="On a gold task: how closely the ranking follows the expected one, 0 to 1 (the share of "
        "response pairs ordered alike; a tie on one side counts half).",
    )
    rater_paused = models.BooleanField(
        default=False,
        db_default=False,
        editable=False,
        help_text="Made by a rater who is paused on the project: left out of exports unless asked for.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rater", "client_submission_id"],
                condition=Q(rater__isnull=False),
                name="judgement_submission_once_per_rater",
            ),
            models.UniqueConstraint(
                fields=["origin", "client_submission_id"],
                condition=Q(rater__isnull=True),
                name="judgement_submission_once_per_origin",
            ),
            models.UniqueConstraint(
                fields=["task", "rater"],
                condition=Q(rater__isnull=False),
                name="judgement_one_per_rater_and_task",
                violation_error_message="This rater has already judged this task.",
            ),
            models.CheckConstraint(condition=in_choices("source", JudgementSource), name="judgement_source_valid"),
            models.CheckConstraint(
                condition=Q(source="human") | Q(rater__isnull=True),
                name="judgement_ai_has_no_rater",
                violation_error_message="An AI label has no rater.",
            ),
            models.CheckConstraint(
                condition=Q(rater__isnull=False) | ~Q(origin=""),
                name="judgement_without_rater_names_origin",
                violation_error_message="A judgement without a rater must name its origin.",
            ),
            models.CheckConstraint(condition=~Q(client_submission_id=""), name="judgement_submission_id_not_empty"),
            models.CheckConstraint(
                condition=Q(probability__isnull=True) | Q(probability__gte=0.0, probability__lte=1.0),
                name="judgement_probability_between_0_and_1",
            ),
            models.CheckConstraint(
                condition=Q(seconds_spent__isnull=True) | Q(seconds_spent__gte=0.0),
                name="judgement_seconds_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(margin__isnull=True) | Q(margin__gte=0.0, margin__lte=validation.MARGIN_MAX),
                name="judgement_margin_in_range",
            ),
            models.CheckConstraint(
                condition=Q(gold_score__isnull=True) | Q(gold_score__gte=0.0, gold_score__lte=1.0),
                name="judgement_gold_score_between_0_and_1",
            ),
        ]
        indexes = [
            models.Index(fields=["task", "source"], name="judgement_task_source"),
            # A rater's gold record in a project: what the pause rule and the figures read after each gold task.
            models.Index(
                fields=["rater", "created_at"], condition=Q(gold_score__isnull=False), name="judgement_gold_by_rater"
            ),
        ]

    def __str__(self) -> str:
        who = self.rater or self.origin
        return f"Judgement {self.pk} on task {self.task_id} by {who}"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        try:
            validation.validate_probability(self.probability)
        except ValidationError as error:
            errors["probability"] = error.messages
        if self.task_id is not None:
            response_ids = self.task.response_ids()
            checks = {
                "ranking": lambda: validation.validate_ranking(self.ranking, response_ids),
                "likert": lambda: validation.validate_likert(self.likert, response_ids),
                "flags": lambda: validation.validate_flags(self.flags, response_ids, self.Flag.values),
                "shown_order": lambda: validation.validate_shown_order(self.shown_order, response_ids),
            }
            for field, check in checks.items():
                try:
                    check()
                except ValidationError as error:
                    errors[field] = error.messages
        if errors:
            raise ValidationError(errors)


class ProblemReportOutcome(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    DISMISSED = "dismissed", "Dismissed"


class TaskProblemReport(models.Model):
    """A rater's note that something is wrong with a task (broken text, wrong language, unsafe to judge).

    While a report is open its task is held back: the lease call hands it to nobody. An admin closes the
    report as resolved (the task was fixed) or dismissed (the report was wrong); either way the task goes back
    to the pool once none of its reports is open.
    """

    Outcome = ProblemReportOutcome

    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="problem_reports")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="problem_reports")
    message = models.TextField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OPEN)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The admin who resolved or dismissed the report.",
    )
    closed_at = models.DateTimeField(null=True, blank=True, help_text="When the report was resolved or dismissed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(message=""), name="problem_report_message_not_empty"),
            models.CheckConstraint(
                condition=in_choices("outcome", ProblemReportOutcome), name="problem_report_outcome_valid"
            ),
            # Reports closed before outcomes were recorded (migration 0014) have neither closer nor time.
            models.CheckConstraint(
                condition=~Q(outcome="open") | Q(closed_by__isnull=True, closed_at__isnull=True),
                name="problem_report_open_not_closed",
                violation_error_message="An open report has no closer and no closing time.",
            ),
        ]
        indexes = [
            # The lease call asks, for every task it considers, whether the task has an open report: an index
            # holding only the open ones stays as small as the set of held-back tasks.
            models.Index(fields=["task"], condition=Q(outcome="open"), name="problem_report_open_by_task"),
        ]

    def __str__(self) -> str:
        return f"Problem with task {self.task_id} reported by {self.rater}"
