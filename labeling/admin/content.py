"""What projects hold: prompts, responses, tasks, assignments, judgements, problem reports, demonstrations."""

from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from labeling import selectors, services
from labeling.admin.base import ReadOnlyAdmin
from labeling.errors import ApplicationError
from labeling.models import (
    Assignment,
    ComparisonTask,
    Demonstration,
    Judgement,
    Project,
    Prompt,
    Response,
    TaskProblemReport,
    TaskResponse,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class HeldBack(TypedDict):
    task_is_held_back: bool


class ResponseInline(admin.TabularInline):
    model = Response
    fields = ["text", "origin", "model_version"]
    raw_id_fields = ["model_version"]
    extra = 0
    show_change_link = True


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "project", "source", "external_id", "is_eval", "created_at"]
    list_filter = ["project", "is_eval", "source"]
    search_fields = ["external_id", "messages"]
    list_select_related = ["project"]
    inlines = [ResponseInline]
    actions = ["mark_eval", "mark_training"]

    @admin.action(description="Mark as eval prompts (held out of training exports)")
    def mark_eval(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        changed = services.prompts_eval_set(prompts=queryset, is_eval=True)
        self.message_user(request, f"{changed} prompts are now eval prompts.", messages.SUCCESS)

    @admin.action(description="Mark as training prompts")
    def mark_training(self, request: HttpRequest, queryset: QuerySet[Prompt]) -> None:
        changed = services.prompts_eval_set(prompts=queryset, is_eval=False)
        self.message_user(request, f"{changed} prompts are now training prompts.", messages.SUCCESS)

    # Text edited here is stored with its HTML again, as every other write stores it.
    def save_model(self, request: HttpRequest, obj: Prompt, form, change: bool) -> None:
        services.prompt_save(prompt=obj)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        for response in formset.save(commit=False):
            services.response_save(response=response)
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
        services.response_save(response=obj)

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

    def save_model(self, request: HttpRequest, obj: ComparisonTask, form, change: bool) -> None:
        """Through the service, which keeps the status true to the judgements the task has and now needs."""
        stored = ComparisonTask.objects.get(pk=obj.pk)
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        services.comparison_task_update(task=stored, **changed)
        obj.status = stored.status

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
    def task_held_back(self, report: "WithAnnotations[TaskProblemReport, HeldBack]") -> bool:
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
