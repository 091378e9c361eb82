"""The admin pages: every table with its list columns, filters and search.

Labels are evidence: judgements, snapshots, training runs and model versions are read-only here, and are
written only by the services that own them.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling import selectors
from labeling.models import (
    Assignment,
    ComparisonTask,
    DatasetSnapshot,
    Demonstration,
    Judgement,
    ModelVersion,
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
        ("Members", {"fields": ["members"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return selectors.project_list_with_counts()

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


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "origin", "prompt", "created_at"]
    list_filter = ["origin", "prompt__project"]
    search_fields = ["text", "origin"]
    raw_id_fields = ["prompt", "model_version"]
    list_select_related = ["prompt"]

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


@admin.register(TaskProblemReport)
class TaskProblemReportAdmin(admin.ModelAdmin):
    """Raters' reports of broken tasks; an admin reads them and marks them resolved."""

    list_display = ["id", "task", "rater", "message", "resolved", "created_at"]
    list_filter = ["resolved", "task__project"]
    search_fields = ["message", "rater__username"]
    list_select_related = ["task", "rater"]
    fields = ["task", "rater", "message", "resolved", "created_at"]
    readonly_fields = ["task", "rater", "message", "created_at"]
    actions = ["mark_resolved"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Mark the selected reports resolved")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[TaskProblemReport]) -> None:
        updated = queryset.update(resolved=True)
        self.message_user(request, f"{updated} report(s) marked resolved.")


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "author", "origin", "created_at"]
    list_filter = ["origin", "prompt__project"]
    search_fields = ["text", "author__username"]
    raw_id_fields = ["prompt", "author"]
    list_select_related = ["prompt", "author"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["id", "project", "kind", "file_format", "row_count", "sha256", "created_by", "created_at"]
    list_filter = ["project", "kind", "file_format"]
    search_fields = ["sha256", "path"]


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "project", "kind", "status", "progress", "base_model", "created_at", "finished_at"]
    list_filter = ["project", "kind", "status"]
    search_fields = ["base_model", "error", "celery_task_id"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "project", "kind", "is_current", "base_model", "parent", "snapshot", "created_at"]
    list_filter = ["project", "kind", "is_current"]
    search_fields = ["name", "base_model", "content_hash"]
