"""RLHF Studio's tables: projects, prompts and responses, comparison tasks and their assignments,
judgements and demonstrations, and the dataset snapshots, training runs and model versions built from them.

Rules that a single row can check are database constraints; rules that need related rows live in
``clean()``. Services call ``full_clean()`` before every write, so both hold for every write path.
"""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from labeling import validation


class User(AbstractUser):
    """A person who labels (in the "raters" group) or administers (staff)."""


def _in_choices(field: str, choices: type[models.Choices]) -> Q:
    return Q(**{f"{field}__in": choices.values})


class Project(models.Model):
    """A labelling effort: its guidelines, the kinds of tasks raters do, and how tasks are handed out."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to raters beside every task.")
    compare_enabled = models.BooleanField(default=True, help_text="Pairwise comparisons (K = 2).")
    rank_enabled = models.BooleanField(default=True, help_text="K-wise rankings with ties (K = 3..9).")
    rate_enabled = models.BooleanField(default=False, help_text="Likert 1-7 scores and flags per response.")
    demonstrate_enabled = models.BooleanField(default=False, help_text="Raters write ideal replies (SFT data).")
    responses_per_task = models.PositiveSmallIntegerField(
        default=4,
        help_text="K: how many responses a generated task compares (2..9).",
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Distinct raters wanted per task."
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of tasks handed out that are gold tasks with a known ranking (0..1).",
    )
    lease_timeout = models.DurationField(
        default=timedelta(minutes=10),
        help_text="How long a rater holds a task before it returns to the pool.",
    )
    retrain_after_judgements = models.PositiveIntegerField(
        default=0,
        help_text="Train a new reward model once this many human judgements have arrived since the last "
        "reward run (checked on the project's schedule). 0: never on its own.",
    )
    promote_better_reward_model = models.BooleanField(
        default=True,
        help_text="Make a new reward model current when its held-out accuracy beats the current one's on the "
        "same held-out prompts. (A project's first reward model always becomes current.)",
    )
    ppo_after_better_reward = models.BooleanField(
        default=False,
        help_text="Start PPO against a reward model as soon as it is made current by a reward run.",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="projects", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_task__gte=validation.K_MIN, responses_per_task__lte=validation.K_MAX),
                name="project_k_between_2_and_9",
                violation_error_message="Responses per task (K) must lie between 2 and 9.",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_at_least_1"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0.0, gold_rate__lte=1.0), name="project_gold_rate_between_0_and_1"
            ),
            models.CheckConstraint(condition=Q(lease_timeout__gt=timedelta(0)), name="project_lease_timeout_positive"),
            models.CheckConstraint(
                condition=Q(compare_enabled=True)
                | Q(rank_enabled=True)
                | Q(rate_enabled=True)
                | Q(demonstrate_enabled=True),
                name="project_some_task_kind_enabled",
                violation_error_message="Enable at least one task kind.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def task_kinds(self) -> list[str]:
        kinds = ("compare", "rank", "rate", "demonstrate")
        return [kind for kind in kinds if getattr(self, f"{kind}_enabled")]


class Prompt(models.Model):
    """A conversation to respond to: a list of ``{"role", "content"}`` messages ending with the user."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    # blank=True: clean() checks the conversation and says what is wrong with it.
    messages = models.JSONField(blank=True, help_text='[{"role": "user", "content": "..."}, ...]')
    source = models.CharField(max_length=200, blank=True, help_text="Where the prompt came from.")
    external_id = models.CharField(max_length=200, blank=True, help_text="Its id in the source; unique per project.")
    content_hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="sha256 of the conversation, to find duplicates."
    )
    # db_default too: rows that other writers insert (COPY, plain SQL) count as not rendered yet.
    messages_html = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        editable=False,
        help_text="Each turn as safe HTML, rendered when stored.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "content_hash"], name="prompt_project_content"),
            # Only the prompts still to render: what the HTML job looks for.
            models.Index(fields=["id"], condition=Q(messages_html=[]), name="prompt_html_missing"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=~Q(external_id=""),
                name="prompt_external_id_unique_per_project",
                violation_error_message="A prompt with this external id already exists in the project.",
            ),
        ]

    def __str__(self) -> str:
        text = self.text
        return text if len(text) <= 80 else text[:77] + "..."

    @staticmethod
    def hash_messages(messages: list[dict]) -> str:
        """The same conversation always gives the same hash, whatever the key order of its messages."""
        canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def text(self) -> str:
        """The last user message: what a one-line listing shows."""
        if isinstance(self.messages, list) and self.messages and isinstance(self.messages[-1], dict):
            return str(self.messages[-1].get("content", ""))
        return ""

    def clean(self) -> None:
        try:
            validation.validate_messages(self.messages)
        except ValidationError as error:
            raise ValidationError({"messages": error.messages}) from None


class Response(models.Model):
    """One reply to a prompt, written by a person or a model."""

    HUMAN = "human"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    html = models.TextField(
        blank=True, default="", db_default="", editable=False, help_text="The text as safe HTML, rendered when stored."
    )
    origin = models.CharField(
        max_length=200,
        default=HUMAN,
        help_text='"human", the name of an imported model, or the name of a model version.',
    )
    model_version = models.ForeignKey(
        "ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="responses"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=~Q(origin=""), name="response_origin_not_empty")]
        indexes = [models.Index(fields=["id"], condition=Q(html=""), name="response_html_missing")]

    def __str__(self) -> str:
        return f"Response {self.pk} ({self.origin})"


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    ARCHIVED = "archived", "Archived"


class ComparisonTask(models.Model):
    """K responses to one prompt, to be compared, ranked or rated by ``required_judgements`` raters."""

    Status = TaskStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    responses = models.ManyToManyField(Response, through="TaskResponse", related_name="tasks")
    required_judgements = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    is_gold = models.BooleanField(default=False, help_text="A task with a known ranking, to check raters.")
    gold_ranking = models.JSONField(
        null=True,
        blank=True,
        help_text="The expected ranking of a gold task: groups of response ids, best first.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(required_judgements__gte=1), name="task_required_judgements_at_least_1"),
            models.CheckConstraint(condition=_in_choices("status", TaskStatus), name="task_status_valid"),
            models.CheckConstraint(
                condition=Q(is_gold=False, gold_ranking__isnull=True) | Q(is_gold=True, gold_ranking__isnull=False),
                name="task_gold_has_ranking",
                violation_error_message="A gold task needs its expected ranking, and only a gold task has one.",
            ),
        ]
        indexes = [models.Index(fields=["project", "status", "is_gold", "id"], name="task_pick")]

    def __str__(self) -> str:
        return f"Task {self.pk} of {self.project}"

    def response_ids(self) -> list[int]:
        """The task's responses in their stored order (read once per instance: a task's responses never
        change after it is created)."""
        cached = getattr(self, "_response_ids", None)
        if cached is None:
            cached = self._response_ids = list(self.slots.order_by("position").values_list("response_id", flat=True))
        return list(cached)

    def clean(self) -> None:
        if self.prompt_id and self.project_id and self.prompt.project_id != self.project_id:
            raise ValidationError({"prompt": "The prompt belongs to another project."})
        if self.pk is None:
            return
        slots = list(self.slots.select_related("response"))
        validation.validate_response_count(len(slots))
        if any(slot.response.prompt_id != self.prompt_id for slot in slots):
            raise ValidationError("Every response of a task must answer the task's prompt.")
        if self.is_gold and self.gold_ranking is not None:
            try:
                validation.validate_ranking(self.gold_ranking, [slot.response_id for slot in slots])
            except ValidationError as error:
                raise ValidationError({"gold_ranking": error.messages}) from None


class TaskResponse(models.Model):
    """A response's place in a task."""

    # db_index=False: the unique (task, response) index already serves lookups by task.
    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="slots", db_index=False)
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="slots")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["task", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "response"], name="task_response_once"),
            models.UniqueConstraint(fields=["task", "position"], name="task_position_once"),
            models.CheckConstraint(
                condition=Q(position__lt=validation.K_MAX),
                name="task_position_below_k_max",
                violation_error_message="A task holds at most 9 responses.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task} #{self.position}: {self.response}"


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

    class Meta:
        ordering = ["-leased_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["task", "rater"],
                name="assignment_one_per_rater_and_task",
                violation_error_message="This rater already holds an assignment for this task.",
            ),
            models.CheckConstraint(condition=_in_choices("state", AssignmentState), name="assignment_state_valid"),
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("leased_at")), name="assignment_expires_after_lease"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "expires_at"], name="assignment_state_expiry"),
            models.Index(fields=["rater", "task"], name="assignment_rater_task"),
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
    margin = models.FloatField(null=True, blank=True, help_text="How much better the winner is (0 or more).")
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
            models.CheckConstraint(condition=_in_choices("source", JudgementSource), name="judgement_source_valid"),
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
                condition=Q(margin__isnull=True) | Q(margin__gte=0.0), name="judgement_margin_not_negative"
            ),
        ]
        indexes = [models.Index(fields=["task", "source"], name="judgement_task_source")]

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
                condition=_in_choices("outcome", ProblemReportOutcome), name="problem_report_outcome_valid"
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


class Demonstration(models.Model):
    """An ideal reply to a prompt, written by a rater or imported: supervised fine-tuning data."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="demonstrations",
    )
    origin = models.CharField(max_length=200, blank=True, help_text="For an imported demonstration: its dataset.")
    text = models.TextField()
    client_submission_id = models.CharField(
        max_length=64, blank=True, help_text="Chosen by the client once per submission, so a retry is stored once."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["author", "client_submission_id"],
                condition=Q(author__isnull=False) & ~Q(client_submission_id=""),
                name="demonstration_submission_once_per_author",
            ),
            models.CheckConstraint(condition=~Q(text=""), name="demonstration_text_not_empty"),
            models.CheckConstraint(
                condition=Q(author__isnull=False) | ~Q(origin=""),
                name="demonstration_without_author_names_origin",
            ),
        ]

    def __str__(self) -> str:
        return f"Demonstration {self.pk} for prompt {self.prompt_id}"


class SnapshotKind(models.TextChoices):
    PREFERENCE = "preference", "Preference pairs"
    RANKING = "ranking", "Rankings"
    SFT = "sft", "Demonstrations (SFT)"
    HH = "hh", "HH-RLHF transcripts"
    PROMPTS = "prompts", "Prompts"


class SnapshotFormat(models.TextChoices):
    JSONL = "jsonl", "JSON lines"
    PARQUET = "parquet", "Parquet"


class DatasetSnapshot(models.Model):
    """A frozen export: the file, its hash and the filter that made it. Never changed once written."""

    Kind = SnapshotKind

    Format = SnapshotFormat

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="snapshots")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    file_format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSONL)
    filters = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=500, help_text="The file, relative to the artefacts folder.")
    sha256 = models.CharField(max_length=64)
    row_count = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Rows by kind, source, etc.")
    code_version = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=_in_choices("kind", SnapshotKind), name="snapshot_kind_valid"),
            models.CheckConstraint(condition=_in_choices("file_format", SnapshotFormat), name="snapshot_format_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} snapshot {self.pk} of {self.project}"


class RunKind(models.TextChoices):
    REWARD = "reward", "Reward model"
    SFT = "sft", "Supervised fine-tuning"
    PPO = "ppo", "PPO"
    GENERATE = "generate", "Generate responses"
    CRITIQUE = "critique", "Critique and revise"
    AI_FEEDBACK = "ai_feedback", "AI feedback labels"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingRun(models.Model):
    """One run of the trainer (or of a generation or labelling job) on a GPU worker."""

    Kind = RunKind

    Status = RunStatus

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="training_runs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="The latest metrics the trainer reported.")
    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, null=True, blank=True, related_name="training_runs"
    )
    base_model = models.CharField(max_length=300, blank=True, help_text="A Hugging Face id, a local path or a name.")
    parent_model = models.ForeignKey(
        "ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="child_runs"
    )
    reward_model = models.ForeignKey(
        "ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="reward_runs"
    )
    output_dir = models.CharField(max_length=500, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="The Celery worker running it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life from its worker.")
    cancel_requested = models.BooleanField(default=False)
    history = models.JSONField(default=list, blank=True, help_text="Every metrics line the trainer wrote.")
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=_in_choices("kind", RunKind), name="run_kind_valid"),
            models.CheckConstraint(condition=_in_choices("status", RunStatus), name="run_status_valid"),
            models.CheckConstraint(condition=Q(progress__gte=0.0, progress__lte=1.0), name="run_progress_0_to_1"),
            models.CheckConstraint(
                condition=Q(started_at__isnull=True)
                | Q(finished_at__isnull=True)
                | Q(finished_at__gte=models.F("started_at")),
                name="run_finishes_after_start",
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status__in=["queued", "running"]),
                name="run_one_active_per_project_and_kind",
                violation_error_message="A run of this kind is already queued or running for this project.",
            ),
        ]
        indexes = [models.Index(fields=["project", "kind", "status"], name="run_project_kind_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} run {self.pk} ({self.status})"


class ModelKind(models.TextChoices):
    REWARD = "reward", "Reward model"
    POLICY = "policy", "Policy"


class ModelVersion(models.Model):
    """A trained model (reward model or policy) with its metrics and lineage."""

    Kind = ModelKind

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="model_versions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=300, blank=True)
    artefact_path = models.CharField(max_length=500, blank=True, help_text="Relative to the artefacts folder.")
    content_hash = models.CharField(max_length=64, blank=True, help_text="sha256 of the saved weights.")
    metrics = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, null=True, blank=True, related_name="model_versions"
    )
    training_run = models.OneToOneField(
        TrainingRun, on_delete=models.PROTECT, null=True, blank=True, related_name="model_version"
    )
    code_version = models.CharField(max_length=100, blank=True)
    is_current = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=_in_choices("kind", ModelKind), name="model_version_kind_valid"),
            models.UniqueConstraint(fields=["project", "kind", "name"], name="model_version_name_unique"),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(is_current=True),
                name="model_version_one_current_per_kind",
                violation_error_message="The project already has a current model of this kind.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


# --- Constitutional AI ---------------------------------------------------------------------------------------


class Constitution(models.Model):
    """A set of principles that drive self-critique and revision (SL-CAI) and AI preference labels (RLAIF)."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False, help_text="The constitution runs use unless told otherwise.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="constitution_one_default"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Principle(models.Model):
    """One principle: how to ask for a critique and a revision by it, and how to ask which of two responses
    follows it better. A principle imported from a layout that has only one side leaves the other blank."""

    constitution = models.ForeignKey(Constitution, on_delete=models.CASCADE, related_name="principles")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200, help_text="A short label, shown in the admin and the agreement table.")
    critique_request = models.TextField(blank=True, help_text="Asks the model to criticise its last response.")
    revision_request = models.TextField(blank=True, help_text="Asks the model to rewrite it to answer the critique.")
    comparison_question = models.TextField(
        blank=True, help_text='For AI feedback, e.g. "Which of these responses is less harmful? ..."'
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["constitution", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["constitution", "name"], name="principle_name_unique"),
            models.CheckConstraint(
                condition=~Q(critique_request="", comparison_question=""), name="principle_asks_something"
            ),
            models.CheckConstraint(
                condition=Q(critique_request="", revision_request="")
                | (~Q(critique_request="") & ~Q(revision_request="")),
                name="principle_critique_and_revision_together",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    ACCEPTED = "accepted", "Accepted"
    EDITED = "edited", "Accepted with edits"
    REJECTED = "rejected", "Rejected"


class CritiqueChain(models.Model):
    """SL-CAI for one prompt: the model's first answer, then rounds of critique and revision by principles
    drawn from a constitution. Raters review the final revision; accepted ones become demonstrations."""

    ReviewStatus = ReviewStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="critique_chains")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="critique_chains")
    constitution = models.ForeignKey(Constitution, on_delete=models.PROTECT, related_name="chains")
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="critique_chains"
    )
    model_name = models.CharField(max_length=300, help_text="The model that answered, criticised and revised.")
    initial_response = models.TextField()
    final_revision = models.TextField()
    review_status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING)
    reviewed_text = models.TextField(blank=True, help_text="The reviewer's edit of the final revision.")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    demonstration = models.OneToOneField(
        Demonstration, on_delete=models.SET_NULL, null=True, blank=True, related_name="critique_chain"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=_in_choices("review_status", ReviewStatus), name="chain_review_valid")
        ]

    def __str__(self) -> str:
        return f"Critique chain {self.pk} on prompt {self.prompt_id}"


class CritiqueRound(models.Model):
    chain = models.ForeignKey(CritiqueChain, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveSmallIntegerField()
    principle = models.ForeignKey(Principle, on_delete=models.PROTECT, related_name="critique_rounds")
    critique = models.TextField()
    revision = models.TextField()

    class Meta:
        ordering = ["chain", "number"]
        constraints = [models.UniqueConstraint(fields=["chain", "number"], name="critique_round_unique")]

    def __str__(self) -> str:
        return f"Round {self.number} of chain {self.chain_id}"
