"""Projects and what they hold: prompts, responses, the comparison tasks built from them, demonstrations;
and the accounts that work on them."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from labeling import quality, validation
from labeling.models.constraints import in_choices


class User(AbstractUser):
    """A person who labels (in the "raters" group) or administers (staff)."""


class TaskOrder(models.TextChoices):
    FIFO = "fifo", "Oldest first"
    UNCERTAINTY = "uncertainty", "Where the reward model is least sure"
    DISAGREEMENT = "disagreement", "Where the last three reward models disagree most"


class Project(models.Model):
    """A labelling effort: its guidelines, the kinds of tasks raters do, and how tasks are handed out."""

    TaskOrder = TaskOrder

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    dataset_licence = models.CharField(
        max_length=64, blank=True, default="",
        help_text="The licence of the project's data, as the Hugging Face Hub names licences (cc-by-4.0, mit, "
        "apache-2.0, ...): the license field of its datasets' cards. Empty: other.",
    )  # fmt: skip
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
    gold_first_tasks = models.PositiveSmallIntegerField(
        default=5,
        help_text="A new rater's first tasks are gold tasks, this many (while there are gold tasks they have not "
        "done); then the gold rate applies.",
    )
    gold_min_count = models.PositiveIntegerField(
        default=10,
        help_text="Pause a rater once they have judged at least this many gold tasks and the upper end of their "
        "gold score's 95% interval lies below the minimum score.",
    )
    gold_min_score = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="The gold score (0..1) a rater must be able to reach; 0 never pauses anyone. A rater who "
        "orders pairs at random scores about 0.5.",
    )
    review_agreement_min = models.FloatField(
        default=0.6,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A completed task goes to the review queue when no response is first in more than half of its "
        "judgements, or (three or more responses) when its judgements agree on fewer than this share of response "
        "pairs (0..1; two random rankings agree on about half).",
    )
    review_scanned_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Tasks completed before this were checked for review."
    )
    audit_rules = models.JSONField(
        default=dict,
        blank=True,
        help_text="Thresholds of the rater audit that differ from the defaults, by name (the raters dashboard "
        "lists every rule and its value).",
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
    task_order = models.CharField(
        max_length=16,
        choices=TaskOrder.choices,
        default=TaskOrder.FIFO,
        db_default=TaskOrder.FIFO,
        help_text="Which open task a rater gets next. Oldest first; or, where the reward models scored the "
        "responses, where the current one is least sure (smallest score gap between the two best responses) or "
        "where the last three disagree most. Gold tasks and the overlap rule stay as they are.",
    )
    priorities_refreshed_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the open tasks' priorities were last written: a rater's walk in priority order starts "
        "again from the top after it.",
    )
    drift_window = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(1)],
        help_text="The reward model's agreement with raters is watched on this many of the newest human judgements.",
    )
    drift_margin = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Warn of drift when agreement on the newest judgements falls more than this below the reward "
        "model's held-out accuracy (0..1).",
    )
    retrain_on_drift = models.BooleanField(
        default=False,
        help_text="Train a new reward model when the drift warning shows (checked on the project's schedule, "
        "once per current reward model).",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="projects", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A rater's standing, when selectors.project_for_lease or assignment_of_rater read the project for them; not
    # stored: whether they are paused on it, how many tasks they have held in it (counted up to gold_first_tasks),
    # and whether they are still a member.
    rater_paused: bool | None = None
    rater_held_first: int | None = None
    rater_is_member: bool | None = None

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_task__gte=validation.K_MIN, responses_per_task__lte=validation.K_MAX),
                name="project_k_between_2_and_9",
                violation_error_message="Responses per task (K) must lie between 2 and 9.",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_at_least_1"),
            models.CheckConstraint(condition=in_choices("task_order", TaskOrder), name="project_task_order_valid"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0.0, gold_rate__lte=1.0), name="project_gold_rate_between_0_and_1"
            ),
            models.CheckConstraint(condition=Q(lease_timeout__gt=timedelta(0)), name="project_lease_timeout_positive"),
            models.CheckConstraint(
                condition=Q(gold_min_score__gte=0.0, gold_min_score__lte=1.0),
                name="project_gold_min_score_between_0_and_1",
            ),
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

    def clean(self) -> None:
        try:
            quality.audit_rules(self.audit_rules)
        except ValueError as error:
            raise ValidationError({"audit_rules": str(error)}) from None

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
    # db_default too: rows that other writers insert (COPY, plain SQL) are training prompts unless they say so.
    is_eval = models.BooleanField(
        default=False,
        db_default=False,
        verbose_name="eval prompt",
        help_text="Held out for evaluation: no training export (reward, SFT, prompts for PPO) takes it, or its "
        "judgements and demonstrations, unless the export asks for eval prompts.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "content_hash"], name="prompt_project_content"),
            models.Index(fields=["project", "id"], condition=Q(is_eval=True), name="prompt_eval"),
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
    # db_default too: the lease function reads it, and rows other writers insert are shuffled as before.
    keep_order = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Show the responses in their stored order to every rater (an evaluation's pairs, balanced so "
        "that each version comes first half of the time) instead of in a new random order for each rater.",
    )
    # Null where the reward models have not scored the task's responses: such tasks come after the scored ones.
    priority = models.FloatField(
        null=True,
        blank=True,
        editable=False,
        help_text="Where the task stands in the project's task order (lower first), refreshed when reward models "
        "score its responses.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(required_judgements__gte=1), name="task_required_judgements_at_least_1"),
            models.CheckConstraint(condition=in_choices("status", TaskStatus), name="task_status_valid"),
            models.CheckConstraint(
                condition=Q(is_gold=False, gold_ranking__isnull=True) | Q(is_gold=True, gold_ranking__isnull=False),
                name="task_gold_has_ranking",
                violation_error_message="A gold task needs its expected ranking, and only a gold task has one.",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status", "is_gold", "id"], name="task_pick"),
            models.Index(
                fields=["project", "is_gold", "priority", "id"], condition=Q(status="open"), name="task_pick_priority"
            ),
        ]

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
