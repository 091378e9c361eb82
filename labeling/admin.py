"""The admin pages: every table with its list columns, filters and search.

Labels are evidence: judgements, snapshots, training runs and model versions are read-only here, and are
written only by the services that own them.
"""

import tempfile
from functools import partial

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from labeling import exporters, importers, rendering, runs, selectors, services
from labeling.errors import ApplicationError
from labeling.models import (
    Assignment,
    ComparisonTask,
    Constitution,
    CritiqueChain,
    CritiqueRound,
    DatasetSnapshot,
    Demonstration,
    Judgement,
    ModelVersion,
    Principle,
    Project,
    Prompt,
    Response,
    TaskProblemReport,
    TaskResponse,
    TrainingRun,
    User,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only services write: the admin lists and shows them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "last_login"]
    list_filter = ["is_staff", "is_active", "groups"]


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, CSV or Parquet.")
    format = forms.ChoiceField(choices=[(value, value) for value in ["auto", *importers.FILE_FORMATS]])
    kind = forms.ChoiceField(
        choices=[(value, value) for value in ["auto", *importers.KINDS]], help_text="The records' layout."
    )
    origin = forms.CharField(required=False, help_text="Where the judgements came from (default: the file name).")


class ExportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(value, value) for value in exporters.EXPORT_KINDS])
    format = forms.ChoiceField(choices=[(value, value) for value in exporters.FILE_FORMATS])
    conversational = forms.BooleanField(required=False, help_text="Prompts and replies as lists of messages.")
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)
    raters = forms.CharField(required=False, help_text="Usernames, separated by commas (empty: everyone).")
    source = forms.ChoiceField(choices=[("", "human and ai"), ("human", "human"), ("ai", "ai")], required=False)
    gold = forms.ChoiceField(choices=[("include", "include"), ("exclude", "exclude"), ("only", "only")])
    snapshot = forms.BooleanField(required=False, help_text="Freeze it as a dataset snapshot instead of downloading.")

    def selection(self, project: Project) -> selectors.ExportFilter:
        data = self.cleaned_data
        return selectors.ExportFilter(
            project_id=project.pk,
            since=data["since"],
            until=data["until"],
            raters=tuple(name.strip() for name in data["raters"].split(",") if name.strip()),
            source=data["source"] or None,
            gold=data["gold"],
        )


def _run_page_action(spec: runs.RunSpec):
    """The project list's action that opens the run page of ``spec``'s kind."""

    def action(modeladmin: "ProjectAdmin", request: HttpRequest, queryset: QuerySet[Project]):
        return modeladmin.to_run_page(request, queryset, spec.page.slug)

    action.__name__ = spec.page.action
    return admin.action(description=spec.page.description)(action)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "responses_per_task",
        "overlap",
        "gold_rate",
        "prompt_count",
        "task_count",
        "open_task_count",
        "judgement_count",
        "created_at",
    ]
    list_filter = ["compare_enabled", "rank_enabled", "rate_enabled", "demonstrate_enabled"]
    search_fields = ["name", "slug", "guidelines"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "guidelines"]}),
        (
            "Task kinds",
            {"fields": ["compare_enabled", "rank_enabled", "rate_enabled", "demonstrate_enabled"]},
        ),
        ("Assignment", {"fields": ["responses_per_task", "overlap", "gold_rate", "lease_timeout"]}),
        (
            "Retraining",
            {"fields": ["retrain_after_judgements", "promote_better_reward_model", "ppo_after_better_reward"]},
        ),
        ("Members", {"fields": ["members"]}),
    ]

    actions = [
        "import_data", "export_data", *(_run_page_action(spec) for spec in runs.all_specs()), "show_agreement"
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return selectors.project_list_with_counts()

    def get_urls(self):
        own = (
            [
                path(
                    "<int:project_id>/import/",
                    self.admin_site.admin_view(self.import_view),
                    name="labeling_project_import",
                ),
                path(
                    "<int:project_id>/export/",
                    self.admin_site.admin_view(self.export_view),
                    name="labeling_project_export",
                ),
            ]
            + [
                path(
                    f"<int:project_id>/{spec.page.slug}/",
                    self.admin_site.admin_view(partial(self.run_view, kind=spec.kind)),
                    name=f"labeling_project_{spec.page.slug.replace('-', '_')}",
                )
                for spec in runs.all_specs()
            ]
            + [
                path(
                    "<int:project_id>/agreement/",
                    self.admin_site.admin_view(self.agreement_view),
                    name="labeling_project_agreement",
                ),
            ]
        )
        return own + super().get_urls()

    def _one_project(self, request: HttpRequest, queryset: QuerySet[Project], what: str) -> Project | None:
        if queryset.count() != 1:
            self.message_user(request, f"Choose exactly one project to {what}.", messages.WARNING)
            return None
        return queryset.first()

    @admin.action(description="Import data (prompts, responses, preference data) into the project")
    def import_data(self, request: HttpRequest, queryset: QuerySet[Project]):
        if project := self._one_project(request, queryset, "import into"):
            return HttpResponseRedirect(reverse("admin:labeling_project_import", args=[project.pk]))
        return None

    @admin.action(description="Export data (or freeze a snapshot) from the project")
    def export_data(self, request: HttpRequest, queryset: QuerySet[Project]):
        if project := self._one_project(request, queryset, "export from"):
            return HttpResponseRedirect(reverse("admin:labeling_project_export", args=[project.pk]))
        return None

    def to_run_page(self, request: HttpRequest, queryset: QuerySet[Project], slug: str):
        if project := self._one_project(request, queryset, "start a run on"):
            return HttpResponseRedirect(reverse(f"admin:labeling_project_{slug.replace('-', '_')}", args=[project.pk]))
        return None

    @admin.action(description="Show AI and human agreement")
    def show_agreement(self, request: HttpRequest, queryset: QuerySet[Project]):
        return self.to_run_page(request, queryset, "agreement")

    def agreement_view(self, request: HttpRequest, project_id: int) -> HttpResponse:
        project = get_object_or_404(Project, pk=project_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": project,
            "title": f"AI and human agreement: {project.name}",
            "agreement": selectors.ai_human_agreement(project=project),
        }
        return render(request, "admin/labeling/project/agreement.html", context)

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.retrain_after_judgements or "retrain_after_judgements" in form.changed_data:
            runs.project_retraining_schedule(project=obj)

    def run_view(self, request: HttpRequest, project_id: int, kind: str) -> HttpResponse:
        project = get_object_or_404(Project, pk=project_id)
        spec = runs.spec_for(kind)
        form = spec.form(request.POST or None, project=project)
        if request.method == "POST" and form.is_valid():
            try:
                run = spec.start(project=project, created_by=request.user, **form.cleaned_data)
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                label = run.get_kind_display()
                self.message_user(request, f"{label} run {run.pk} queued on the training workers.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:labeling_trainingrun_change", args=[run.pk]))
        return self._page(request, project, form, spec.page.title, spec.page.button)

    def _page(self, request: HttpRequest, project: Project, form, title: str, button: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": project,
            "title": f"{title}: {project.name}",
            "form": form,
            "button": button,
        }
        return render(request, "admin/labeling/project/data_form.html", context)

    def import_view(self, request: HttpRequest, project_id: int) -> HttpResponse:
        project = get_object_or_404(Project, pk=project_id)
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = services.dataset_import_file(
                    project=project,
                    source=upload.file,
                    name=upload.name,
                    file_format=form.cleaned_data["format"],
                    kind=form.cleaned_data["kind"],
                    origin=form.cleaned_data["origin"],
                )
            except ApplicationError as error:
                form.add_error("file", f"{error.message} Nothing was imported.")
            else:
                created = ", ".join(f"{count} {what}" for what, count in result.created.items()) or "nothing"
                skipped = ", ".join(f"{count} {what}" for what, count in result.skipped.items()) or "nothing"
                self.message_user(
                    request,
                    f"Imported {result.records} {result.kind} records: created {created}; skipped {skipped}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:labeling_project_change", args=[project.pk]))
        return self._page(request, project, form, "Import data", "Import")

    def export_view(self, request: HttpRequest, project_id: int) -> HttpResponse:
        project = get_object_or_404(Project, pk=project_id)
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if data["snapshot"]:
                snapshot = services.dataset_snapshot_create(
                    project=project,
                    kind=data["kind"],
                    file_format=data["format"],
                    selection=form.selection(project),
                    conversational=data["conversational"],
                    created_by=request.user,
                )
                self.message_user(
                    request, f"Snapshot {snapshot.pk} frozen: {snapshot.row_count} rows.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:labeling_datasetsnapshot_change", args=[snapshot.pk]))
            spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 (FileResponse closes it)
            exporters.write_export(
                data["kind"], data["format"], form.selection(project), spool, conversational=data["conversational"]
            )
            spool.seek(0)
            return FileResponse(spool, as_attachment=True, filename=f"{project.slug}-{data['kind']}.{data['format']}")
        return self._page(request, project, form, "Export data", "Export")

    @admin.display(ordering="prompt_count", description="prompts")
    def prompt_count(self, project: Project) -> int:
        return project.prompt_count

    @admin.display(ordering="task_count", description="tasks")
    def task_count(self, project: Project) -> int:
        return project.task_count

    @admin.display(ordering="open_task_count", description="open tasks")
    def open_task_count(self, project: Project) -> int:
        return project.open_task_count

    @admin.display(ordering="judgement_count", description="judgements")
    def judgement_count(self, project: Project) -> int:
        return project.judgement_count


class ResponseInline(admin.TabularInline):
    model = Response
    fields = ["text", "origin", "model_version"]
    raw_id_fields = ["model_version"]
    extra = 0
    show_change_link = True


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "project", "source", "external_id", "created_at"]
    list_filter = ["project", "source"]
    search_fields = ["external_id", "messages"]
    list_select_related = ["project"]
    inlines = [ResponseInline]

    # Text edited here is stored with its HTML again, as every other write stores it.
    def save_model(self, request: HttpRequest, obj: Prompt, form, change: bool) -> None:
        obj.messages_html = rendering.messages_html_for_storage(obj.messages)
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        for response in formset.save(commit=False):
            response.html = rendering.html_for_storage(response.text)
            response.save()
        for response in formset.deleted_objects:
            response.delete()


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "origin", "prompt", "created_at"]
    list_filter = ["origin", "prompt__project"]
    search_fields = ["text", "origin"]
    raw_id_fields = ["prompt", "model_version"]
    list_select_related = ["prompt"]

    def save_model(self, request: HttpRequest, obj: Response, form, change: bool) -> None:
        obj.html = rendering.html_for_storage(obj.text)
        super().save_model(request, obj, form, change)

    @admin.display(description="text")
    def short_text(self, response: Response) -> str:
        return response.text if len(response.text) <= 80 else response.text[:77] + "..."


class TaskResponseInline(admin.TabularInline):
    model = TaskResponse
    fields = ["position", "response"]
    readonly_fields = ["position", "response"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ComparisonTask)
class ComparisonTaskAdmin(admin.ModelAdmin):
    """Tasks are created by imports and generation runs; here an admin reviews them and may change the
    number of judgements wanted or archive them."""

    list_display = ["id", "prompt", "project", "k", "status", "is_gold", "required_judgements", "created_at"]
    list_filter = ["project", "status", "is_gold"]
    search_fields = ["prompt__external_id", "prompt__messages"]
    list_select_related = ["prompt", "project"]
    fields = ["project", "prompt", "required_judgements", "status", "is_gold", "gold_ranking"]
    readonly_fields = ["project", "prompt", "is_gold", "gold_ranking"]
    inlines = [TaskResponseInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="K")
    def k(self, task: ComparisonTask) -> int:
        return task.slots.count()


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "rater", "state", "leased_at", "expires_at", "skip_reason"]
    list_filter = ["state", "task__project"]
    search_fields = ["rater__username", "skip_reason"]
    list_select_related = ["task", "rater"]


@admin.register(Judgement)
class JudgementAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "rater", "source", "origin", "ranking", "all_bad", "seconds_spent", "created_at"]
    list_filter = ["source", "origin", "task__project", "task__is_gold"]
    search_fields = ["rater__username", "origin", "rationale", "client_submission_id"]
    list_select_related = ["task", "rater"]
    date_hierarchy = "created_at"


class ProblemReportOutcomeFilter(admin.SimpleListFilter):
    """Outcome, open by default: the reports that hold a task back are the ones that need an admin."""

    title = "outcome"
    parameter_name = "outcome"
    ALL = "all"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [*TaskProblemReport.Outcome.choices, (self.ALL, "All")]

    def _chosen(self) -> str:
        return self.value() or TaskProblemReport.Outcome.OPEN

    def choices(self, changelist):
        for value, label in self.lookup_choices:
            yield {
                "selected": self._chosen() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[TaskProblemReport]) -> QuerySet[TaskProblemReport]:
        chosen = self._chosen()
        return queryset if chosen == self.ALL else queryset.filter(outcome=chosen)


@admin.register(TaskProblemReport)
class TaskProblemReportAdmin(ReadOnlyAdmin):
    """Raters' reports of broken tasks. While a report is open its task is held back: no rater is given it.
    The list opens on the open reports; an admin fixes the task and resolves the report, or dismisses a report
    that was wrong, and the task goes back to the pool once none of its reports is open. Who closed a report
    and when is kept; the reports themselves are written only by services."""

    list_display = [
        "id", "task", "project", "rater", "message", "outcome", "task_held_back", "created_at", "closed_by",
        "closed_at",
    ]  # fmt: skip
    list_filter = [ProblemReportOutcomeFilter, "task__project"]
    search_fields = ["message", "rater__username", "=task__id"]
    list_select_related = ["task__project", "rater", "closed_by"]
    fields = ["task", "rater", "message", "outcome", "created_at", "closed_by", "closed_at"]
    actions = ["resolve", "dismiss"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskProblemReport]:
        held_back = Exists(selectors.open_problem_reports(task=OuterRef("task")))
        return super().get_queryset(request).annotate(task_is_held_back=held_back)

    @admin.display(description="project", ordering="task__project")
    def project(self, report: TaskProblemReport) -> Project:
        return report.task.project

    @admin.display(description="task held back", boolean=True, ordering="task_is_held_back")
    def task_held_back(self, report: TaskProblemReport) -> bool:
        return report.task_is_held_back

    def has_close_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("labeling.change_taskproblemreport")

    @admin.action(
        description="Resolve the selected reports (the task was fixed: back to the pool)", permissions=["close"]
    )
    def resolve(self, request: HttpRequest, queryset: QuerySet[TaskProblemReport]) -> None:
        self._close(request, queryset, services.task_problem_report_resolve, "resolved")

    @admin.action(description="Dismiss the selected reports (nothing wrong: back to the pool)", permissions=["close"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet[TaskProblemReport]) -> None:
        self._close(request, queryset, services.task_problem_report_dismiss, "dismissed")

    def _close(self, request: HttpRequest, queryset: QuerySet[TaskProblemReport], service, done: str) -> None:
        closed, refusals = [], []
        for report in queryset:
            try:
                closed.append(service(report=report, closed_by=request.user))
            except ApplicationError as error:
                refusals.append(error.message)
        if closed:
            task_ids = {report.task_id for report in closed}
            held = set(
                TaskProblemReport.objects.filter(
                    task_id__in=task_ids, outcome=TaskProblemReport.Outcome.OPEN
                ).values_list("task_id", flat=True)
            )
            message = f"{len(closed)} report(s) {done}; {len(task_ids - held)} task(s) back in the pool"
            if held:
                message += f", {len(held)} still held back by other open reports"
            self.message_user(request, f"{message}.", messages.SUCCESS)
        for refusal in refusals:
            self.message_user(request, refusal, messages.WARNING)


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "author", "origin", "created_at"]
    list_filter = ["origin", "prompt__project"]
    search_fields = ["text", "author__username"]
    raw_id_fields = ["prompt", "author"]
    list_select_related = ["prompt", "author"]


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

    def get_urls(self):
        own = [
            path(
                "<int:snapshot_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="labeling_datasetsnapshot_download",
            )
        ]
        return own + super().get_urls()

    @admin.display(description="file")
    def download(self, snapshot: DatasetSnapshot) -> str:
        url = reverse("admin:labeling_datasetsnapshot_download", args=[snapshot.pk])
        return format_html('<a href="{}">download</a>', url)

    def download_view(self, request: HttpRequest, snapshot_id: int) -> HttpResponse:
        snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
        file_path = services.snapshot_path(snapshot)
        if not file_path.is_file():
            self.message_user(request, f"The file of snapshot {snapshot.pk} is missing.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:labeling_datasetsnapshot_changelist"))
        return FileResponse(open(file_path, "rb"), as_attachment=True, filename=file_path.name)  # noqa: SIM115


def _curve(history: list[dict], key: str, colour: str, width: int = 560, height: int = 140) -> str:
    """An SVG polyline of one metric over the steps (the admin has no chart library to load)."""
    points = [(line["step"], float(line[key])) for line in history if key in line and "step" in line]
    if len(points) < 2:
        return ""
    steps = [step for step, _ in points]
    values = [value for _, value in points]
    low, high = min(values), max(values)
    span_x, span_y = (max(steps) - min(steps)) or 1, (high - low) or 1
    first = min(steps)
    coordinates = " ".join(
        f"{(step - first) / span_x * (width - 10) + 5:.1f},{height - 5 - (value - low) / span_y * (height - 10):.1f}"
        for step, value in points
    )
    return format_html(
        '<figure style="margin:0 0 1em"><figcaption>{} ({} to {})</figcaption>'
        '<svg width="{}" height="{}" role="img" aria-label="{} over steps" style="background:#fafafa">'
        '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/></svg></figure>',
        key, f"{low:.4g}", f"{high:.4g}", width, height, key, colour, coordinates,
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


def seconds_left(run: TrainingRun, now=None) -> float | None:
    """Time left in the training phase: the trainer's last estimate, less the time since it was made."""
    metrics = run.metrics or {}
    eta, made_at = metrics.get("eta_s"), metrics.get("eta_at")
    if run.status != "running" or metrics.get("phase") != "training" or not isinstance(eta, int | float):
        return None
    waited = (now or timezone.now()).timestamp() - made_at if isinstance(made_at, int | float) else 0.0
    return max(0.0, eta - max(waited, 0.0))


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    """Runs of the trainer: live status, phase, progress, curves and the log tail (the page refreshes itself
    while a run is active), the model it produced, and Cancel."""

    list_display = [
        "id", "project", "kind", "status", "phase", "progress_bar", "held_out_accuracy", "base_model", "created_at",
    ]  # fmt: skip
    list_filter = ["project", "kind", "status"]
    search_fields = ["base_model", "error", "celery_task_id"]
    actions = ["cancel_runs"]
    fields = [
        "project", "kind", "status", "phase", "progress_bar", "eta", "produced", "episodes_ending", "base_model",
        "parent_model", "reward_model", "snapshot", "config", "metrics", "curves",
        "error", "log", "worker", "created_by", "created_at", "started_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = ["phase", "progress_bar", "eta", "produced", "episodes_ending", "curves", "log"]
    change_form_template = "admin/labeling/trainingrun/change_form.html"

    @admin.display(description="phase")
    def phase(self, run: TrainingRun) -> str:
        metrics = run.metrics or {}
        name = metrics.get("phase") or ("waiting for a worker" if run.status == "queued" else "-")
        share = metrics.get("phase_progress")
        if run.status == "running" and isinstance(share, int | float) and name not in ("done", "-"):
            return f"{name} ({share * 100:.0f}%)"
        if run.status in ("failed", "cancelled") and name not in ("done", "-"):
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

    @admin.display(description="time left")
    def eta(self, run: TrainingRun) -> str:
        seconds = seconds_left(run)
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
                '<strong style="color:#b3261e">{}: most responses are cut off at the response budget, so '
                "their scores carry the missing-EOS penalty. Raise the response length.</strong>",
                text,
            )
        return text

    @admin.display(description="curves")
    def curves(self, run: TrainingRun) -> str:
        points = curve_points(run.history or [])
        keys = runs.spec_for(run.kind).curves
        parts = [_curve(points, key, colour) for key, colour in zip(keys, CURVE_COLOURS, strict=False)]
        evaluations = epoch_evaluations(run.history or [])
        if evaluations:
            parts.append(
                format_html(
                    "<p>held-out accuracy by epoch: {}</p>",
                    ", ".join(f"{line['epoch']}: {line['eval_accuracy']:.3f}" for line in evaluations),
                )
            )
        return format_html_join("", "{}", ((part,) for part in parts if part)) if any(parts) else "-"

    @admin.display(description="log (end)")
    def log(self, run: TrainingRun) -> str:
        return format_html(
            '<pre class="run-log" style="max-height:24em;overflow:auto;white-space:pre-wrap">{}</pre>',
            run.log_tail or "-",
        )

    def has_cancel_permission(self, request: HttpRequest, obj=None) -> bool:
        """Cancelling stops someone's training: staff who may change runs (superusers, or those given the
        permission), not every staff member."""
        return request.user.has_perm("labeling.change_trainingrun")

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        for run in queryset:
            runs.training_run_cancel(run=run)
        self.message_user(request, f"Asked {queryset.count()} run(s) to stop.")

    def get_urls(self):
        cancel = path(
            "<int:run_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="labeling_trainingrun_cancel"
        )
        return [cancel, *super().get_urls()]

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The run page's Cancel button (a POST): stops the run, then shows its page again."""
        run = get_object_or_404(TrainingRun, pk=run_id)
        if not self.has_cancel_permission(request, run):
            raise PermissionDenied
        if request.method == "POST":
            run = runs.training_run_cancel(run=run)
            if run.status == "cancelled":
                self.message_user(request, f"Run {run.pk} was cancelled before it started.", messages.SUCCESS)
            elif run.cancel_requested and run.status == "running":
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
        active = run is not None and run.status in ("queued", "running")
        context = {
            **(extra_context or {}),
            "refresh": active,
            "run": run,
            "can_cancel": active and not run.cancel_requested and self.has_cancel_permission(request, run),
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
    actions = ["make_current"]

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


class PrincipleInline(admin.StackedInline):
    model = Principle
    extra = 0
    fields = ["position", "name", "is_active", "critique_request", "revision_request", "comparison_question"]


class ConstitutionImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(
        help_text='JSON: critique/revision entries ({"key": {"prompt": [...CritiqueRequest...], "edit_request": '
        '...RevisionRequest...}}) or "choose the response that ..." principles (a list, or {"principles": [...]}).'
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    make_default = forms.BooleanField(required=False, help_text="Runs use it unless told otherwise.")


@admin.register(Constitution)
class ConstitutionAdmin(admin.ModelAdmin):
    """Constitutions and their principles, editable; import one from JSON; pick the default."""

    list_display = ["name", "is_default", "principle_count", "created_at"]
    search_fields = ["name", "description", "principles__name"]
    inlines = [PrincipleInline]
    readonly_fields = ["is_default"]
    actions = ["make_default"]
    change_list_template = "admin/labeling/constitution/change_list.html"

    @admin.display(description="principles")
    def principle_count(self, constitution: Constitution) -> int:
        return constitution.principles.count()

    @admin.action(description="Make the selected constitution the default")
    def make_default(self, request: HttpRequest, queryset: QuerySet[Constitution]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one constitution.", messages.WARNING)
            return
        constitution = services.constitution_make_default(constitution=queryset.get())
        self.message_user(request, f"{constitution.name} is now the default constitution.")

    def get_urls(self):
        own = [
            path("import/", self.admin_site.admin_view(self.import_view), name="labeling_constitution_import"),
        ]
        return own + super().get_urls()

    def import_view(self, request: HttpRequest) -> HttpResponse:
        form = ConstitutionImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                constitution = services.constitution_import(
                    name=form.cleaned_data["name"],
                    data=form.cleaned_data["file"].read(),
                    description=form.cleaned_data["description"],
                    make_default=form.cleaned_data["make_default"],
                )
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                count = constitution.principles.count()
                self.message_user(request, f"Imported {constitution.name} with {count} principles.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:labeling_constitution_change", args=[constitution.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a constitution",
            "form": form,
            "button": "Import",
        }
        return render(request, "admin/labeling/project/data_form.html", context)


class CritiqueRoundInline(admin.TabularInline):
    model = CritiqueRound
    extra = 0
    fields = ["number", "principle", "critique", "revision"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(CritiqueChain)
class CritiqueChainAdmin(ReadOnlyAdmin):
    """SL-CAI chains: the prompt, the first answer, each round's principle, critique and revision."""

    list_display = ["id", "project", "prompt", "model_name", "review_status", "created_at"]
    list_filter = ["project", "review_status", "constitution"]
    search_fields = ["initial_response", "final_revision"]
    inlines = [CritiqueRoundInline]


@admin.register(Principle)
class PrincipleAdmin(admin.ModelAdmin):
    list_display = ["name", "constitution", "position", "is_active"]
    list_filter = ["constitution", "is_active"]
    search_fields = ["name", "critique_request", "revision_request", "comparison_question"]


@admin.register(CritiqueRound)
class CritiqueRoundAdmin(ReadOnlyAdmin):
    list_display = ["chain", "number", "principle"]
    list_filter = ["principle"]
    search_fields = ["critique", "revision"]
