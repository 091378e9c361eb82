"""Projects and accounts: the project list, its import and export pages, import jobs, and the pages that start
runs."""

from functools import partial
from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from labeling import exporters, importers, permissions, quality, runs, selectors, services
from labeling.admin import charts, evaluation, model_in_loop
from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError, PayloadTooLarge
from labeling.models import ImportJob, Project, ProjectAgreement, User
from labeling.tasks import rater_stats_refresh_project_task

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    from labeling.selectors import ProjectCounts


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
    skip_invalid = forms.BooleanField(
        required=False, label="Skip invalid records",
        help_text="Leave out records that do not parse (the import lists them by line) instead of failing.",
    )  # fmt: skip


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    """Imports: each upload's status, its progress while a worker imports it (the page refreshes itself), then
    what it created and skipped, or the error with its line."""

    list_display = ["id", "project", "file_name", "status", "progress", "records", "created_by", "created_at"]
    list_filter = ["project", "status"]
    search_fields = ["file_name", "error"]
    fields = [
        "project", "status", "progress", "file_name", "file_size", "file_format", "kind", "origin",
        "response_origin", "skip_invalid", "records", "created", "skipped", "invalid", "error", "error_line",
        "error_field", "worker",
        "created_by", "created_at", "started_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = ["progress"]
    change_form_template = "admin/labeling/importjob/change_form.html"

    @admin.display(description="progress")
    def progress(self, job: ImportJob) -> str:
        if job.status == ImportJob.Status.QUEUED:
            return "waiting for a worker"
        if job.status != ImportJob.Status.RUNNING:
            return "done" if job.status == ImportJob.Status.SUCCEEDED else "stopped; nothing was imported"
        report = services.import_job_progress(job)
        if report is None:
            return "starting"
        fraction = report.get("fraction")
        if fraction is None:
            return f"{report['records']:,} records imported"
        return format_html(
            '<progress value="{}" max="1"></progress> {}% ({} records)',
            f"{fraction:.3f}", f"{fraction * 100:.0f}", f"{report['records']:,}",
        )  # fmt: skip

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        """A finished job's record may go; one a worker holds may not."""
        active = obj is not None and obj.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)
        return not active and super().has_delete_permission(request, obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        job = ImportJob.objects.filter(pk=object_id).first()
        active = job is not None and job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)
        context = {**(extra_context or {}), "refresh": active, "job": job}
        return super().change_view(request, object_id, form_url, context)


class ExportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(value, value) for value in exporters.EXPORT_KINDS])
    format = forms.ChoiceField(choices=[(value, value) for value in exporters.FILE_FORMATS])
    conversational = forms.BooleanField(required=False, help_text="Prompts and replies as lists of messages.")
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)
    raters = forms.CharField(required=False, help_text="Usernames, separated by commas (empty: everyone).")
    source = forms.ChoiceField(choices=[("", "human and ai"), ("human", "human"), ("ai", "ai")], required=False)
    gold = forms.ChoiceField(choices=[(value, value) for value in selectors.WHICH])
    paused = forms.ChoiceField(
        choices=[(value, value) for value in selectors.WHICH],
        initial="exclude",
        required=False,
        help_text="Judgements by raters paused on the project (left empty: exclude).",
    )
    eval = forms.ChoiceField(
        choices=[(value, value) for value in selectors.WHICH],
        initial="exclude",
        required=False,
        label="Eval prompts",
        help_text="Eval prompts with their judgements and demonstrations: held out of training data unless you "
        "include them (left empty: exclude).",
    )
    snapshot = forms.BooleanField(required=False, help_text="Freeze it as a dataset snapshot instead of downloading.")

    def selection(self, project: Project) -> selectors.ExportFilter:
        data = self.cleaned_data
        raters = [name.strip() for name in data["raters"].split(",") if name.strip()]
        return selectors.ExportFilter.for_project(
            project, since=data["since"], until=data["until"], raters=raters, source=data["source"], gold=data["gold"],
            paused=data["paused"] or None, eval=data["eval"] or None,
        )  # fmt: skip


DASHBOARD_PAGE = 100  # raters a page


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
            "Rater quality",
            {
                "fields": ["gold_first_tasks", "gold_min_count", "gold_min_score"],
                "description": "Each judgement on a gold task is scored against the expected ranking. A rater "
                "whose score's 95% interval lies wholly under the minimum, after at least the minimum count of "
                "gold tasks, is paused on the project; the raters' standing page lists them.",
            },
        ),
        (
            "Retraining",
            {"fields": ["retrain_after_judgements", "promote_better_reward_model", "ppo_after_better_reward"]},
        ),
        (
            "Model in the loop",
            {
                "fields": ["task_order", "drift_window", "drift_margin", "retrain_on_drift"],
                "description": "The current reward model scores the open tasks' responses. Its agreement with "
                "raters on new judgements, and the drift warning, are on the project's reward model page.",
            },
        ),
        ("Data", {"fields": ["dataset_licence"]}),
        ("Members", {"fields": ["members"]}),
    ]

    actions = [
        "import_data", "export_data", *(_run_page_action(spec) for spec in runs.all_specs()), "show_agreement",
        "show_raters", "show_evaluation", "show_reward_model",
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return selectors.project_list_with_counts()

    def get_urls(self):
        own = (
            [
                path(
                    "<id:project_id>/import/",
                    self.admin_site.admin_view(self.import_view),
                    name="labeling_project_import",
                ),
                path(
                    "<id:project_id>/export/",
                    self.admin_site.admin_view(self.export_view),
                    name="labeling_project_export",
                ),
            ]
            + [
                path(
                    f"<id:project_id>/{spec.page.slug}/",
                    self.admin_site.admin_view(partial(self.run_view, kind=spec.kind)),
                    name=f"labeling_project_{spec.page.slug.replace('-', '_')}",
                )
                for spec in runs.all_specs()
            ]
            + [
                path(
                    "<id:project_id>/agreement/",
                    self.admin_site.admin_view(self.agreement_view),
                    name="labeling_project_agreement",
                ),
                path(
                    "<id:project_id>/evaluation/",
                    self.admin_site.admin_view(partial(evaluation.evaluation_view, self)),
                    name="labeling_project_evaluation",
                ),
                path(
                    "<id:project_id>/reward-model/",
                    self.admin_site.admin_view(partial(model_in_loop.reward_model_view, self)),
                    name="labeling_project_reward_model",
                ),
                path(
                    "<id:project_id>/raters/",
                    self.admin_site.admin_view(self.raters_view),
                    name="labeling_project_raters",
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

    @admin.action(description="Evaluate: eval prompts, the leaderboard of versions, evaluation runs")
    def show_evaluation(self, request: HttpRequest, queryset: QuerySet[Project]):
        return self.to_run_page(request, queryset, "evaluation")

    @admin.action(description="Reward model against raters: live agreement, drift, task order")
    def show_reward_model(self, request: HttpRequest, queryset: QuerySet[Project]):
        return self.to_run_page(request, queryset, "reward-model")

    @admin.action(description="Show the raters' audit")
    def show_raters(self, request: HttpRequest, queryset: QuerySet[Project]):
        return self.to_run_page(request, queryset, "raters")

    def raters_view(self, request: HttpRequest, project_id: int) -> HttpResponse:
        """The raters dashboard: one row per audited rater with their figures, flags and weekly charts."""
        project = get_object_or_404(Project, pk=project_id)
        if request.method == "POST":
            rater_stats_refresh_project_task.delay(project.pk)
            self.message_user(request, "The audit is being refreshed; reload this page in a moment.", messages.INFO)
            return HttpResponseRedirect(request.get_full_path())
        query = request.GET
        sort = query.get("o", "")
        rows = selectors.rater_dashboard(
            project=project,
            flagged=query.get("flagged") == "1",
            paused=query.get("paused") == "1",
            search=query.get("q", "").strip(),
            sort=sort,
        )
        page = Paginator(rows, DASHBOARD_PAGE).get_page(query.get("p"))
        for row in page:
            row.charts = charts.weekly_charts(str(row.rater_id), row.weekly)
        rules = quality.audit_rules(project.audit_rules)
        agreement = ProjectAgreement.objects.filter(project=project).first()
        for week in agreement.figures.get("weeks", []) if agreement else []:
            week["starts"] = selectors.week_start(week["week"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": project,
            "title": f"Raters: {project.name}",
            "page": page,
            "rules": [(name, value, name in project.audit_rules) for name, value in rules.items()],
            "refreshed_at": max((row.refreshed_at for row in page), default=None),
            "query": query,
            "sort": sort,
            "columns": charts.sortable_columns(query, sort),
            "project": project,
            "agreement": agreement,
            "chart_assets": charts.chart_assets(),
        }
        return render(request, "admin/labeling/project/raters.html", context)

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        retraining = ("retrain_after_judgements", "retrain_on_drift")
        if obj.retrain_after_judgements or obj.retrain_on_drift or set(retraining) & set(form.changed_data):
            runs.project_retraining_schedule(project=obj)
        if "task_order" in form.changed_data:
            services.model_in_loop_refresh_later(project=obj)

    def run_view(self, request: HttpRequest, project_id: int, kind: str) -> HttpResponse:
        project = get_object_or_404(Project, pk=project_id)
        spec = runs.spec_for(kind)
        # A link may preset the form's fields (the model list's "evaluate" action names the policies).
        initial: dict[str, object] = dict(request.GET.items())
        if "policies" in request.GET:
            initial["policies"] = request.GET["policies"].split(",")
        form = spec.form(request.POST or None, project=project, initial=initial)
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
        if request.method == "POST":
            try:  # before the body is read: Django would spool the whole of it to disk first
                services.upload_size_check(services.declared_size(request.META))
            except PayloadTooLarge as error:
                self.message_user(request, f"{error.message} Nothing was imported.", messages.ERROR)
                response = self._page(request, project, ImportForm(), "Import data", "Import")
                response.status_code = error.status_code
                return response
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                job = services.import_job_create(
                    project=project, upload=data["file"], file_format=data["format"], kind=data["kind"],
                    origin=data["origin"], skip_invalid=data["skip_invalid"],
                    created_by=permissions.signed_in(request.user),
                )  # fmt: skip
            except ApplicationError as error:
                form.add_error("file", f"{error.message} Nothing was imported.")
            else:
                self.message_user(
                    request, f"Import {job.pk} of {job.file_name} queued; this page follows it.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:labeling_importjob_change", args=[job.pk]))
        return self._page(request, project, form, "Import data", "Import")

    def export_view(self, request: HttpRequest, project_id: int) -> HttpResponseBase:
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
                    created_by=permissions.signed_in(request.user),
                )
                self.message_user(
                    request, f"Snapshot {snapshot.pk} frozen: {snapshot.row_count} rows.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:labeling_datasetsnapshot_change", args=[snapshot.pk]))
            spool = exporters.export_spooled(
                data["kind"], data["format"], form.selection(project), conversational=data["conversational"]
            )
            return FileResponse(spool, as_attachment=True, filename=f"{project.slug}-{data['kind']}.{data['format']}")
        return self._page(request, project, form, "Export data", "Export")

    @admin.display(ordering="prompt_count", description="prompts")
    def prompt_count(self, project: "WithAnnotations[Project, ProjectCounts]") -> int:
        return project.prompt_count

    @admin.display(ordering="task_count", description="tasks")
    def task_count(self, project: "WithAnnotations[Project, ProjectCounts]") -> int:
        return project.task_count

    @admin.display(ordering="open_task_count", description="open tasks")
    def open_task_count(self, project: "WithAnnotations[Project, ProjectCounts]") -> int:
        return project.open_task_count

    @admin.display(ordering="judgement_count", description="judgements")
    def judgement_count(self, project: "WithAnnotations[Project, ProjectCounts]") -> int:
        return project.judgement_count
