"""Projects and their content for staff (raters see their own judgements and demonstrations only): projects,
prompts, responses, tasks, judgements, demonstrations."""

from datetime import timedelta

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, services, validation
from labeling.api.access import project_for_rater, project_for_staff
from labeling.errors import ApplicationError, NotFound
from labeling.models import (
    ComparisonTask,
    Demonstration,
    Judgement,
    Project,
    Prompt,
    User,
)
from labeling.models import Response as ModelResponse


class ProjectOutput(serializers.ModelSerializer):
    task_kinds = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "guidelines", "task_kinds", "compare_enabled", "rank_enabled", "rate_enabled",
            "demonstrate_enabled", "responses_per_task", "overlap", "gold_rate", "lease_timeout", "task_order",
            "drift_window", "drift_margin", "retrain_on_drift", "created_at",
        ]  # fmt: skip


@extend_schema_field(
    {"type": "string", "format": "duration", "description": "From 1 minute to 7 days, as [DD] [HH:[MM:]]ss."}
)
class LeaseTimeoutField(serializers.DurationField):
    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=timedelta(minutes=1), max_value=timedelta(days=7), **kwargs)


@extend_schema_field({"type": "string", "maxLength": 150, "description": "A username."})
class UsernameField(serializers.SlugRelatedField):
    def __init__(self, **kwargs) -> None:
        super().__init__(slug_field="username", queryset=User.objects.all(), **kwargs)


class ProjectInput(serializers.ModelSerializer):
    members = serializers.ListField(
        child=UsernameField(),
        required=False, max_length=10_000, help_text="Usernames of the raters who work on the project.",
    )  # fmt: skip
    lease_timeout = LeaseTimeoutField(required=False)

    class Meta:
        model = Project
        fields = [
            "name", "slug", "guidelines", "compare_enabled", "rank_enabled", "rate_enabled", "demonstrate_enabled",
            "responses_per_task", "overlap", "gold_rate", "lease_timeout", "task_order", "drift_window",
            "drift_margin", "retrain_on_drift", "members",
        ]  # fmt: skip
        validators: list = []  # the service checks uniqueness and constraints, and says what is wrong
        extra_kwargs = {"guidelines": {"max_length": validation.TEXT_MAX}}


class MeOutput(serializers.Serializer):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()


class MeApi(APIView):
    """GET (anyone signed in): who the credentials belong to, to check a token or a session. One database query
    (the user's row), so the rater-loop bench also uses it as the server's ceiling."""

    @extend_schema(responses=MeOutput)
    def get(self, request: Request) -> Response:
        return Response({"username": request.user.get_username(), "is_staff": request.user.is_staff})


class ProjectListApi(generics.ListAPIView):
    """GET: the projects you may see (raters: theirs). POST (staff): create a project."""

    serializer_class = ProjectOutput

    def get_permissions(self):
        return [permissions.IsStaff()] if self.request.method == "POST" else [permissions.IsRater()]

    def get_queryset(self):
        return permissions.projects_visible_to(self.request.user).order_by("name")

    @extend_schema(request=ProjectInput, responses={201: ProjectOutput})
    def post(self, request: Request) -> Response:
        data = ProjectInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(**data.validated_data)
        return Response(ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    """GET: one project you may see. PATCH (staff): change its settings or members."""

    serializer_class = ProjectOutput

    def get_permissions(self):
        return [permissions.IsStaff()] if self.request.method == "PATCH" else [permissions.IsRater()]

    def get(self, request: Request, slug: str) -> Response:
        return Response(ProjectOutput(project_for_rater(request, slug)).data)

    @extend_schema(request=ProjectInput, responses=ProjectOutput)
    def patch(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = ProjectInput(project, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=project, **data.validated_data)
        return Response(ProjectOutput(project).data)


class PromptOutput(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "messages", "source", "external_id", "metadata", "created_at"]


METADATA_HELP = f"Free-form JSON, at most {validation.METADATA_MAX:,} characters."


class PromptInput(serializers.Serializer):
    messages = serializers.ListField(
        child=serializers.DictField(
            child=serializers.CharField(max_length=validation.TEXT_MAX), help_text="{role, content}"
        ),
        required=False, min_length=1, max_length=validation.MESSAGES_MAX,
        help_text="The conversation: {role, content} objects ending with a user turn.",
    )  # fmt: skip
    prompt = serializers.CharField(
        required=False, max_length=validation.TEXT_MAX, help_text="A plain prompt: one user message."
    )
    source = serializers.CharField(required=False, default="api", max_length=200)  # type: ignore[assignment]  # a field named like a Field attribute
    external_id = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)
    metadata = serializers.DictField(
        required=False, default=dict, validators=[validation.validate_metadata_size], help_text=METADATA_HELP
    )

    def validate(self, data):
        if "messages" not in data and "prompt" not in data:
            raise serializers.ValidationError({"messages": "Give 'messages' or 'prompt'."})
        if "prompt" in data:
            data["messages"] = [{"role": "user", "content": data.pop("prompt")}]
        return data


class PromptListApi(generics.ListAPIView):
    """GET (staff): the project's prompts. POST (staff): add a prompt."""

    permission_classes = [permissions.IsStaff]
    serializer_class = PromptOutput

    def get_queryset(self):
        return Prompt.objects.filter(project=project_for_staff(self.request, self.kwargs["slug"])).order_by("id")

    @extend_schema(request=PromptInput, responses={201: PromptOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = PromptInput(data=request.data)
        data.is_valid(raise_exception=True)
        prompt = services.prompt_create(project=project, **data.validated_data)
        return Response(PromptOutput(prompt).data, status=status.HTTP_201_CREATED)


class ResponseOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelResponse
        fields = ["id", "prompt", "text", "origin", "model_version", "metadata", "created_at"]


class ResponseInput(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=validation.TEXT_MAX)
    origin = serializers.CharField(default=ModelResponse.HUMAN, max_length=200)
    metadata = serializers.DictField(
        required=False, default=dict, validators=[validation.validate_metadata_size], help_text=METADATA_HELP
    )


class ResponseListApi(generics.ListAPIView):
    """GET (staff): the responses to a prompt. POST (staff): add one."""

    permission_classes = [permissions.IsStaff]
    serializer_class = ResponseOutput

    def get_queryset(self):
        return get_object_or_404(Prompt, pk=self.kwargs["prompt_id"]).responses.order_by("id")

    @extend_schema(request=ResponseInput, responses={201: ResponseOutput})
    def post(self, request: Request, prompt_id: int) -> Response:
        prompt = get_object_or_404(Prompt, pk=prompt_id)
        data = ResponseInput(data=request.data)
        data.is_valid(raise_exception=True)
        response = services.response_create(prompt=prompt, **data.validated_data)
        return Response(ResponseOutput(response).data, status=status.HTTP_201_CREATED)


class TaskOutput(serializers.ModelSerializer):
    response_ids = serializers.SerializerMethodField()

    class Meta:
        model = ComparisonTask
        fields = [
            "id",
            "prompt",
            "response_ids",
            "required_judgements",
            "status",
            "is_gold",
            "gold_ranking",
            "created_at",
        ]

    def get_response_ids(self, task: ComparisonTask) -> list[int]:
        return [slot.response_id for slot in task.slots.all()]


class TaskInput(serializers.Serializer):
    prompt_id = serializers.IntegerField(min_value=1, max_value=validation.ID_MAX)
    response_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=validation.ID_MAX),
        min_length=validation.K_MIN,
        max_length=validation.K_MAX,
    )
    required_judgements = serializers.IntegerField(
        required=False, min_value=1, max_value=1000, allow_null=True, default=None
    )
    gold_ranking = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=validation.ID_MAX), max_length=validation.K_MAX
        ),
        required=False, allow_null=True, default=None, max_length=validation.K_MAX,
        help_text="The expected ranking: groups of response ids, best first.",
    )  # fmt: skip


@extend_schema_view(get=extend_schema(parameters=[OpenApiParameter("status", str, enum=ComparisonTask.Status.values)]))
class TaskListApi(generics.ListAPIView):
    """GET (staff): the project's tasks (``?status=open``). POST (staff): a task over a prompt's responses."""

    permission_classes = [permissions.IsStaff]
    serializer_class = TaskOutput

    def get_queryset(self):
        project = project_for_staff(self.request, self.kwargs["slug"])
        tasks = ComparisonTask.objects.filter(project=project).prefetch_related("slots").order_by("id")
        if self.request.query_params.get("status"):
            tasks = tasks.filter(status=self.request.query_params["status"])
        return tasks

    @extend_schema(request=TaskInput, responses={201: TaskOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = TaskInput(data=request.data)
        data.is_valid(raise_exception=True)
        prompt = Prompt.objects.filter(project=project, pk=data.validated_data["prompt_id"]).first()
        if prompt is None:
            raise NotFound(f"The project has no prompt {data.validated_data['prompt_id']}.")
        wanted = data.validated_data["response_ids"]
        found = {response.pk: response for response in ModelResponse.objects.filter(pk__in=wanted)}
        missing = [response_id for response_id in wanted if response_id not in found]
        if missing:
            raise ApplicationError(f"There are no responses {missing}.", {"fields": {"response_ids": missing}})
        task = services.comparison_task_create(
            project=project,
            prompt=prompt,
            responses=[found[response_id] for response_id in wanted],
            required_judgements=data.validated_data["required_judgements"],
            gold_ranking=data.validated_data["gold_ranking"],
        )
        return Response(TaskOutput(task).data, status=status.HTTP_201_CREATED)


class JudgementOutput(serializers.ModelSerializer):
    rater: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Judgement
        fields = [
            "id", "task", "rater", "source", "origin", "ranking", "margin", "all_bad", "likert", "flags", "rationale",
            "seconds_spent", "shown_order", "probability", "created_at",
        ]  # fmt: skip


class JudgementListApi(generics.ListAPIView):
    """GET: the project's judgements; a rater sees only their own."""

    permission_classes = [permissions.IsRater]
    serializer_class = JudgementOutput

    def get_queryset(self):
        project = project_for_rater(self.request, self.kwargs["slug"])
        return (
            permissions.judgements_visible_to(self.request.user)
            .filter(task__project=project)
            .select_related("rater")
            .order_by("id")
        )


class DemonstrationOutput(serializers.ModelSerializer):
    author: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Demonstration
        fields = ["id", "prompt", "author", "origin", "text", "created_at"]


class DemonstrationListApi(generics.ListAPIView):
    """GET: the project's demonstrations; a rater sees only their own."""

    permission_classes = [permissions.IsRater]
    serializer_class = DemonstrationOutput

    def get_queryset(self):
        project = project_for_rater(self.request, self.kwargs["slug"])
        demonstrations = Demonstration.objects.filter(prompt__project=project).select_related("author").order_by("id")
        if not permissions.is_staff(self.request.user):
            demonstrations = demonstrations.filter(author=permissions.signed_in(self.request.user))
        return demonstrations
