"""What is built from the labels: dataset snapshots, training runs (and the generation and labelling jobs
that run the same way), and model versions."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from labeling.models.constraints import in_choices
from labeling.models.content import Project


class SnapshotKind(models.TextChoices):
    PREFERENCE = "preference", "Preference pairs"
    RANKING = "ranking", "Rankings"
    CONSENSUS = "consensus", "Consensus rankings (one per task)"
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
            models.CheckConstraint(condition=in_choices("kind", SnapshotKind), name="snapshot_kind_valid"),
            models.CheckConstraint(condition=in_choices("file_format", SnapshotFormat), name="snapshot_format_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} snapshot {self.pk} of {self.project}"


class RunKind(models.TextChoices):
    REWARD = "reward", "Reward model"
    SFT = "sft", "Supervised fine-tuning"
    PPO = "ppo", "PPO"
    DPO = "dpo", "DPO"
    GENERATE = "generate", "Generate responses"
    EVALUATE = "evaluate", "Evaluate versions"
    SCORE = "score", "Score responses"
    CRITIQUE = "critique", "Critique and revise"
    AI_FEEDBACK = "ai_feedback", "AI feedback labels"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingRun(models.Model):
    """One job of the trainer process on a training worker, of any ``Kind``: training (reward model, SFT, PPO)
    and also the jobs that only use models (generating responses, SL-CAI critiques, AI feedback labels). They
    share everything a run is (a queued subprocess with progress, a log, Cancel, an outcome), hence one model;
    the name is kept for the training kinds, which are most of them, and for the URLs and data that use it."""

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
            models.CheckConstraint(condition=in_choices("kind", RunKind), name="run_kind_valid"),
            models.CheckConstraint(condition=in_choices("status", RunStatus), name="run_status_valid"),
            models.CheckConstraint(condition=Q(progress__gte=0.0, progress__lte=1.0), name="run_progress_0_to_1"),
            models.CheckConstraint(
                condition=Q(started_at__isnull=True)
                | Q(finished_at__isnull=True)
                | Q(finished_at__gte=models.F("started_at")),
                name="run_finishes_after_start",
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]),
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
            models.CheckConstraint(condition=in_choices("kind", ModelKind), name="model_version_kind_valid"),
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


class ResponseScore(models.Model):
    """A reward model's score of a response, stored once per response and model version: what judges
    comparisons between model versions as the reward model would."""

    response = models.ForeignKey("Response", on_delete=models.CASCADE, related_name="scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="response_scores")
    score = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "response"], name="response_score_once_per_version"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} scores response {self.response_id}: {self.score:.3f}"


# --- Constitutional AI ---------------------------------------------------------------------------------------
