"""Snapshots, training runs (live status, phase, progress, curves, log, Cancel) and model versions."""

import shutil
import tempfile
from functools import partial
from pathlib import Path

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from labeling import artefacts, hub, runs
from labeling.admin import charts, evaluation
from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError
from labeling.models import (
    DatasetSnapshot,
    ModelVersion,
    ResponseScore,
    TrainingRun,
)
from training.runtime import TENSORBOARD_DIR


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    """Frozen exports. Immutable: listed, shown and downloaded, never edited."""

    list_display = [
        "id",
        "project",
        "kind",
        "file_format",
        "row_count",
        "sha256",
        "created_by",
        "created_at",
        "download",
    ]
    list_filter = ["project", "kind", "file_format"]
    search_fields = ["sha256", "path"]
    readonly_fields = ["download"]
    max_hub_download_rows = 1_000_000  # larger snapshots: `manage.py snapshot_hub` on a worker machine

    def get_urls(self):
        own = [
            path(
                "<id:snapshot_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="labeling_datasetsnapshot_download",
            ),
            path(
                "<id:snapshot_id>/hub-dataset/",
                self.admin_site.admin_view(self.hub_dataset_view),
                name="labeling_datasetsnapshot_hub_dataset",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="file")
    def download(self, snapshot: DatasetSnapshot) -> str:
        url = reverse("admin:labeling_datasetsnapshot_download", args=[snapshot.pk])
        hub_url = reverse("admin:labeling_datasetsnapshot_hub_dataset", args=[snapshot.pk])
        return format_html('<a href="{}">download</a> · <a href="{}">Hugging Face dataset (zip)</a>', url, hub_url)

    def hub_dataset_view(self, request: HttpRequest, snapshot_id: int) -> HttpResponseBase:
        """The snapshot as a Hugging Face dataset folder (labeling.hub), zipped: unzip it and
        ``load_dataset(folder)``, or upload it to the Hub as it is."""
        snapshot = get_object_or_404(DatasetSnapshot.objects.select_related("project"), pk=snapshot_id)
        back = HttpResponseRedirect(reverse("admin:labeling_datasetsnapshot_changelist"))
        if snapshot.row_count > self.max_hub_download_rows:
            self.message_user(
                request, f"Snapshot {snapshot.pk} is too large to zip here: use manage.py snapshot_hub.", messages.ERROR
            )
            return back
        name = f"{snapshot.project.slug}-{snapshot.kind}-{snapshot.pk}"
        with tempfile.TemporaryDirectory() as scratch:
            try:
                hub.hub_folder_write(snapshot, Path(scratch) / name)
            except (ApplicationError, artefacts.StoreError) as error:
                self.message_user(request, str(error), messages.ERROR)
                return back
            archive = shutil.make_archive(str(Path(scratch) / name), "zip", root_dir=scratch, base_dir=name)
            spool = tempfile.TemporaryFile()  # noqa: SIM115 (the response closes it)
            with open(archive, "rb") as zipped:
                shutil.copyfileobj(zipped, spool)
        spool.seek(0)
        return FileResponse(spool, as_attachment=True, filename=f"{name}.zip", content_type="application/zip")

    def download_view(self, request: HttpRequest, snapshot_id: int) -> HttpResponseBase:
        snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
        try:
            return artefacts.file_response(snapshot.path, snapshot.sha256, filename=snapshot.path.rsplit("/", 1)[-1])
        except artefacts.StoreError:
            self.message_user(request, f"The file of snapshot {snapshot.pk} is missing.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:labeling_datasetsnapshot_changelist"))


def _curve(run: TrainingRun, history: list[dict], key: str, colour: str) -> str:
    """One metric of the run over its steps, as a chart (hovering shows each step's value)."""
    points = [(line["step"], float(line[key])) for line in history if key in line and "step" in line]
    if len(points) < 2:
        return ""
    values = [value for _, value in points]
    return charts.chart(
        f"run-{run.pk}-{key}", title=f"{key} ({min(values):.4g} to {max(values):.4g})", x=[step for step, _ in points],
        series=[{"label": key, "values": values, "colour": colour}], x_label="step",
    )  # fmt: skip


CURVE_COLOURS = ("#b3261e", "#2956c8", "#3a7d44", "#8a5a00")
EOS_RATE_WARNING = 0.5


def curve_points(history: list[dict]) -> list[dict]:
    """The lines of a run's history that are points of its curves: logging steps (phase and progress lines,
    the evaluations and the closing summary are not)."""
    return [line for line in history if "step" in line and not line.get("event") and "eval_accuracy" not in line]


def epoch_evaluations(history: list[dict]) -> list[dict]:
    """One held-out evaluation per epoch (the closing summary repeats the last one: it is left out)."""
    return [line for line in history if "eval_accuracy" in line and "epoch" in line and not line.get("event")]


def _figure(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and value == value else "-"


def reward_quality(metrics: dict) -> str:
    """A reward model's report card from its run's final metrics: held-out loss and accuracy by epoch (the kept
    one marked), calibration, accuracy by the raters' margin, and how much the reward follows length."""
    epochs, calibration = metrics.get("epochs") or [], metrics.get("calibration") or {}
    if not epochs and not calibration:
        return "-"
    kept = metrics.get("best_epoch")
    rows = format_html_join(
        "", "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
        ((line.get("epoch"), " (kept)" if line.get("epoch") == kept else "", _figure(line.get("eval_loss"), 4),
          _figure(line.get("eval_accuracy"))) for line in epochs),
    )  # fmt: skip
    parts = [
        format_html(
            '<table class="reward-quality"><tr><th>epoch</th><th>held-out loss</th><th>held-out accuracy</th></tr>'
            "{}</table>",
            rows,
        )
    ]
    if calibration:
        parts.append(
            format_html(
                "<p>Calibration: temperature {}; expected calibration error {} before, {} after (on {} pairs, "
                "chance alone leaves about {}).</p>",
                _figure(calibration.get("temperature")),
                _figure(calibration.get("ece_before")),
                _figure(calibration.get("ece_after")),
                metrics.get("eval_pairs", "-"),
                _figure(calibration.get("ece_floor")),
            )  # fmt: skip
        )
    by_margin = metrics.get("eval_accuracy_by_margin") or {}
    if by_margin:
        parts.append(
            format_html(
                "<p>Accuracy by the raters' margin (tied responses form no pair): {}.</p>",
                ", ".join(
                    f"{'no margin' if margin == 'none' else f'margin {margin}'}: {_figure(group.get('accuracy'))} "
                    f"({group.get('pairs')} pairs)"
                    for margin, group in by_margin.items()
                ),
            )
        )
    if "length_correlation" in metrics:
        parts.append(
            format_html(
                "<p>Length: rank correlation of reward and reply length {}; the model prefers the longer reply in "
                "{} of pairs, the raters in {}.</p>",
                _figure(metrics.get("length_correlation"), 2),
                _figure(metrics.get("prefers_longer"), 2),
                _figure(metrics.get("raters_prefer_longer"), 2),
            )  # fmt: skip
        )
    return format_html_join("", "{}", ((part,) for part in parts))


def tensorboard_dir(run: TrainingRun) -> str:
    """Where a run's TensorBoard files are: its folder in a local store, else their URL in the store (TensorBoard
    reads ``s3://`` with its S3 support installed, or after ``aws s3 sync``)."""
    key = f"{run.output_dir or artefacts.run_key(run)}/{TENSORBOARD_DIR}"
    store = artefacts.store()
    return str(store.local_path(key)) if store.is_local else store.url_for(key)


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    """Runs of the trainer: live status, phase, progress, curves and the log tail (the page refreshes itself
    while a run is active), the model it produced, and Cancel."""

    list_display = [
        "id", "project", "kind", "status", "phase", "progress_bar", "held_out_accuracy", "base_model", "created_at",
    ]  # fmt: skip
    list_filter = ["project", "kind", "status"]
    search_fields = ["base_model", "error", "celery_task_id"]
    actions = ["cancel_runs", "check_overoptimisation"]
    fields = [
        "project", "kind", "status", "phase", "progress_bar", "eta", "produced", "episodes_ending", "base_model",
        "parent_model", "reward_model", "snapshot", "config", "quality", "probes", "metrics", "curves",
        "tensorboard", "error", "log", "worker", "created_by", "created_at", "started_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = [
        "phase", "progress_bar", "eta", "produced", "episodes_ending", "quality", "probes", "curves", "tensorboard",
        "log",
    ]  # fmt: skip
    change_form_template = "admin/labeling/trainingrun/change_form.html"

    @admin.display(description="phase")
    def phase(self, run: TrainingRun) -> str:
        metrics = run.metrics or {}
        name = metrics.get("phase") or ("waiting for a worker" if run.status == TrainingRun.Status.QUEUED else "-")
        share = metrics.get("phase_progress")
        if run.status == TrainingRun.Status.RUNNING and isinstance(share, int | float) and name not in ("done", "-"):
            return f"{name} ({share * 100:.0f}%)"
        if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED) and name not in ("done", "-"):
            return f"stopped while {name}"
        return name

    @admin.display(description="progress")
    def progress_bar(self, run: TrainingRun) -> str:
        return format_html(
            '<progress value="{}" max="1"></progress> {}%', f"{run.progress:.3f}", f"{run.progress * 100:.0f}"
        )

    @admin.display(description="held-out accuracy")
    def held_out_accuracy(self, run: TrainingRun) -> str:
        value = (run.metrics or {}).get("eval_accuracy")
        return f"{value:.3f}" if isinstance(value, float) else "-"

    @admin.display(description="reward model quality")
    def quality(self, run: TrainingRun) -> str:
        return reward_quality(run.metrics or {}) if run.kind == "reward" else "-"

    @admin.display(description="time left")
    def eta(self, run: TrainingRun) -> str:
        seconds = runs.seconds_left(run)
        if seconds is None:
            return "-"
        return f"about {seconds:.0f} s" if seconds >= 1 else "finishing the training phase"

    @admin.display(description="model produced")
    def produced(self, run: TrainingRun) -> str:
        version = ModelVersion.objects.filter(training_run=run).first()
        if version is None:
            return "-"
        link = format_html(
            '<a href="{}">{}</a>{}',
            reverse("admin:labeling_modelversion_change", args=[version.pk]),
            version.name,
            " (current)" if version.is_current else "",
        )
        promotion = (run.metrics or {}).get("promotion")
        return format_html("{}<br>{}", link, promotion) if promotion else link

    @admin.display(description="episodes that ended")
    def episodes_ending(self, run: TrainingRun) -> str:
        """PPO: the share of sampled responses that ended with EOS within the response budget; a warning when
        most were cut off, since each of those gets the missing-EOS penalty."""
        points = [line["eos_rate"] for line in curve_points(run.history or []) if "eos_rate" in line]
        if run.kind != "ppo" or not points:
            return "-"
        recent = points[-5:]
        rate = sum(recent) / len(recent)
        text = f"{rate * 100:.0f}% of episodes ended with EOS (last {len(recent)} logged iterations)"
        if rate < EOS_RATE_WARNING:
            return format_html(
                '<strong class="run-warning">{}: most responses are cut off at the response budget, so '
                "their scores carry the missing-EOS penalty. Raise the response length.</strong>",
                text,
            )
        return text

    @admin.display(description="over-optimisation probes")
    def probes(self, run: TrainingRun) -> str:
        """PPO: the probe points' KL and score, and the page that sends them to raters."""
        points = (run.metrics or {}).get("probes") or []
        if run.kind != "ppo" or not points:
            return "-"
        summary = ", ".join(
            f"step {point['step']}: KL {point['kl']:.2f}, score {point['score']:.2f}" for point in points
        )
        url = reverse("admin:labeling_trainingrun_overoptimisation", args=[run.pk])
        return format_html('{}<br><a href="{}">Over-optimisation check</a>', summary, url)

    @admin.display(description="curves")
    def curves(self, run: TrainingRun) -> str:
        points = curve_points(run.history or [])
        keys = runs.spec_for(run.kind).curves
        parts = [_curve(run, points, key, colour) for key, colour in zip(keys, CURVE_COLOURS, strict=False)]
        evaluations = epoch_evaluations(run.history or [])
        if evaluations:
            parts.append(
                format_html(
                    "<p>held-out accuracy by epoch: {}</p>",
                    ", ".join(f"{line['epoch']}: {line['eval_accuracy']:.3f}" for line in evaluations),
                )
            )
        return format_html_join("", "{}", ((part,) for part in parts if part)) if any(parts) else "-"

    @admin.display(description="TensorBoard")
    def tensorboard(self, run: TrainingRun) -> str:
        """The command that shows this run's event files (written by every trainer run, training.tracking)."""
        if run.status == TrainingRun.Status.QUEUED:
            return "-"
        return format_html('<code class="tensorboard-command">tensorboard --logdir {}</code>', tensorboard_dir(run))

    @admin.display(description="log (end)")
    def log(self, run: TrainingRun) -> str:
        return format_html(
            '<pre class="run-log">{}</pre>',
            run.log_tail or "-",
        )

    def has_cancel_permission(self, request: HttpRequest, obj=None) -> bool:
        """Cancelling stops someone's training: staff who may change runs (superusers, or those given the
        permission), not every staff member."""
        return request.user.has_perm("labeling.change_trainingrun")

    @admin.action(description="Over-optimisation check of a finished PPO run (send its probe answers to raters)")
    def check_overoptimisation(self, request: HttpRequest, queryset: QuerySet[TrainingRun]):
        if queryset.count() != 1 or queryset.exclude(kind=TrainingRun.Kind.PPO).exists():
            self.message_user(request, "Choose one PPO run.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:labeling_trainingrun_overoptimisation", args=[queryset.get().pk]))

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        for run in queryset:
            runs.training_run_cancel(run=run)
        self.message_user(request, f"Asked {queryset.count()} run(s) to stop.")

    def get_urls(self):
        cancel = path(
            "<id:run_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="labeling_trainingrun_cancel"
        )
        check = path(
            "<id:run_id>/overoptimisation/",
            self.admin_site.admin_view(partial(evaluation.overoptimisation_view, self)),
            name="labeling_trainingrun_overoptimisation",
        )
        return [cancel, check, *super().get_urls()]

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The run page's Cancel button (a POST): stops the run, then shows its page again."""
        run = get_object_or_404(TrainingRun, pk=run_id)
        if not self.has_cancel_permission(request, run):
            raise PermissionDenied
        if request.method == "POST":
            run = runs.training_run_cancel(run=run)
            if run.status == TrainingRun.Status.CANCELLED:
                self.message_user(request, f"Run {run.pk} was cancelled before it started.", messages.SUCCESS)
            elif run.cancel_requested and run.status == TrainingRun.Status.RUNNING:
                self.message_user(request, f"Run {run.pk} is stopping; its worker ends the trainer within seconds.")
            else:
                self.message_user(request, f"Run {run.pk} had already ended ({run.status}).", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:labeling_trainingrun_change", args=[run.pk]))

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        """A queued or running run is cancelled, not deleted."""
        if obj is not None and obj.status in runs.ACTIVE:
            return False
        return super().has_delete_permission(request, obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        run = TrainingRun.objects.filter(pk=object_id).first()
        active = run is not None and run.status in runs.ACTIVE
        context = {
            **(extra_context or {}),
            "refresh": active,
            "run": run,
            "can_cancel": (
                run is not None and active and not run.cancel_requested and self.has_cancel_permission(request, run)
            ),
        }
        return super().change_view(request, object_id, form_url, context)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    """Trained models with their metrics and lineage; "make current" picks the one later runs use."""

    list_display = [
        "name", "project", "kind", "is_current", "held_out_accuracy", "base_model", "snapshot", "training_run",
        "created_at",
    ]  # fmt: skip
    list_filter = ["project", "kind", "is_current"]
    search_fields = ["name", "base_model", "content_hash"]
    actions = ["make_current", "evaluate"]
    readonly_fields = ["quality"]

    @admin.action(description="Evaluate the selected policies against each other (blinded pairwise tasks)")
    def evaluate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]):
        projects = set(queryset.values_list("project", flat=True))
        if len(projects) != 1 or queryset.exclude(kind=ModelVersion.Kind.POLICY).exists():
            self.message_user(request, "Choose policies of one project.", messages.WARNING)
            return None
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        url = reverse("admin:labeling_project_evaluate", args=[projects.pop()])
        return HttpResponseRedirect(f"{url}?policies={ids}")

    @admin.display(description="reward model quality")
    def quality(self, version: ModelVersion) -> str:
        return reward_quality(version.metrics or {}) if version.kind == "reward" else "-"

    @admin.display(description="held-out accuracy")
    def held_out_accuracy(self, version: ModelVersion) -> str:
        value = (version.metrics or {}).get("eval_accuracy")
        return f"{value:.3f}" if isinstance(value, float) else "-"

    @admin.action(description="Make the selected model current")
    def make_current(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one model.", messages.WARNING)
            return
        version = runs.model_version_make_current(version=queryset.get())
        self.message_user(request, f"{version.name} is now the current {version.get_kind_display().lower()}.")


@admin.register(ResponseScore)
class ResponseScoreAdmin(ReadOnlyAdmin):
    """Each reward model's stored score of a response (score runs): what the leaderboard's reward-model judge reads."""

    list_display = ["model_version", "response", "score", "created_at"]
    list_filter = ["model_version__project", "model_version"]
    search_fields = ["model_version__name"]
    list_select_related = ["model_version", "response"]
    raw_id_fields = ["response"]
