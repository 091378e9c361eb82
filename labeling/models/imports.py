"""Import jobs: an uploaded file waiting for, or read by, a worker that imports it into a project."""

from django.conf import settings
from django.db import models

from labeling.models.constraints import in_choices
from labeling.models.content import Project


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportJob(models.Model):
    """One uploaded file and its import: stored on upload, then imported all or nothing by a worker. While it
    runs, its progress lives in a file next to the upload (the import's own transaction cannot report it)."""

    Status = ImportStatus

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    file_name = models.CharField(max_length=255, help_text="The uploaded file's name.")
    file_size = models.BigIntegerField(default=0, help_text="Bytes.")
    file_format = models.CharField(max_length=8, help_text="jsonl, csv or parquet.")
    kind = models.CharField(max_length=16, default="auto", help_text="The records' layout (asked for, then found).")
    origin = models.CharField(max_length=200, blank=True)
    response_origin = models.CharField(max_length=200, default="imported")
    skip_invalid = models.BooleanField(
        default=False, help_text="Leave out records that do not parse (counted and listed) instead of failing."
    )
    path = models.CharField(max_length=500, blank=True, help_text="The stored upload, under the artefacts folder.")
    records = models.PositiveIntegerField(default=0)
    created = models.JSONField(default=dict, blank=True, help_text="Rows written, by kind of row.")
    skipped = models.JSONField(
        default=dict, blank=True, help_text="Duplicates skipped, by kind of row; and invalid records left out."
    )
    invalid = models.JSONField(
        default=list,
        blank=True,
        help_text="Invalid records left out (skip_invalid): line, field, problem; the first 100.",
    )
    error = models.TextField(blank=True)
    error_line = models.PositiveIntegerField(null=True, blank=True, help_text="The line (or Parquet row) at fault.")
    error_field = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="The Celery worker importing it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=in_choices("status", ImportStatus), name="import_status_valid"),
            models.CheckConstraint(condition=models.Q(file_size__gte=0), name="import_size_not_negative"),
        ]
        indexes = [models.Index(fields=["status"], name="import_job_status")]

    def __str__(self) -> str:
        return f"Import {self.pk} of {self.file_name} ({self.status})"
