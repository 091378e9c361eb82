"""The REST API under /api/v1/. Each class parses input, checks permissions, calls one service or selector
and serializes the answer. The rater pages use these same endpoints."""

import tempfile

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import exporters, importers, permissions, selectors, services
from labeling.errors import ApplicationError, NotFound
from labeling.models import (
    Assignment,
    ComparisonTask,
    CritiqueChain,
    DatasetSnapshot,
    Demonstration,
    Flag,
    Judgement,
    Project,
    Prompt,
    User,
)
from labeling.models import Response as ModelResponse
from labeling.rendering import markdown_to_safe_html

LABELS = "ABCDEFGHI"


def _project_for_rater(request: Request, slug: str) -> Project:
    """The project, if the user may label it; 404 otherwise, so that other projects stay invisible."""
    project = selectors.project_for_labelling(user=request.user, slug=slug)
    if project is None:
        raise NotFound(f"No project '{slug}' is open to you.")
    return project


def _task_for_rater(request: Request, task_id: int) -> ComparisonTask:
    task = ComparisonTask.objects.filter(pk=task_id, project__in=permissions.projects_visible_to(request.user)).first()
    if task is None:
        raise NotFound(f"There is no task {task_id} open to you.")
    return task


def conversation_payload(messages: list[dict], html: list[str] | None = None) -> list[dict]:
    """Each turn's role and safe HTML: ``html`` when given (read with the task), else rendered now."""
    html = html or [markdown_to_safe_html(turn["content"]) for turn in messages]
    return [{"role": turn["role"], "html": turn_html} for turn, turn_html in zip(messages, html, strict=True)]


def task_kind(project: Project, k: int) -> str:
    """compare (two responses side by side), rank (K-wise with ties) or rate (Likert only)."""
    if project.compare_enabled and k == 2:
        return "compare"
    if project.rank_enabled or project.compare_enabled:
        return "rank"
    return "rate"


def task_payload(assignment: Assignment, project: Project) -> dict:
    """What the task page needs: the conversation and the responses in this rater's order, as safe HTML
    (and as text, for the word diff)."""
    content = getattr(assignment, "content", None) or selectors.task_content(task_id=assignment.task_id)
    order = assignment.shown_order or sorted(content.texts)
    kind = task_kind(project, len(order))
    return {
        "task_id": assignment.task_id,
        "kind": kind,
        "rate": project.rate_enabled,
        "expires_at": assignment.expires_at.isoformat(),
        "conversation": conversation_payload(content.messages, content.messages_html),
        "responses": [
            {
                "id": response_id,
                "label": LABELS[position] if kind == "compare" else str(position + 1),
                "html": content.html[response_id],
                "text": content.texts[response_id],
            }
            for position, response_id in enumerate(order)
        ],
    }


class ConversationTurnOutput(serializers.Serializer):
    role = serializers.CharField()
    html = serializers.CharField(help_text="Sanitised HTML rendered from Markdown.")


class TaskResponseOutput(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField(help_text="A, B for comparisons; 1..K for rankings.")
    html = serializers.CharField(help_text="Sanitised HTML rendered from Markdown.")
    text = serializers.CharField()


class TaskPayloadOutput(serializers.Serializer):
    task_id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["compare", "rank", "rate"])
    rate = serializers.BooleanField(help_text="Whether the page asks for Likert scores and flags.")
    expires_at = serializers.DateTimeField()
    conversation = ConversationTurnOutput(many=True)
    responses = TaskResponseOutput(many=True, help_text="In the order this rater is shown them.")


class TaskNextApi(APIView):
    """POST: lease the rater's next task in a project (or return the one they hold). 204 when none is left."""

    permission_classes = [permissions.IsRater]

    @extend_schema(request=None, responses={200: TaskPayloadOutput, 204: None})
    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_rater(request, slug)
        assignment = services.assignment_lease_next(project=project, rater=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(task_payload(assignment, project))


class JudgementSubmitApi(APIView):
    """POST: the rater's judgement on a task they hold. 201 when stored, 200 when this submission id was
    stored before (a retry)."""

    permission_classes = [permissions.IsRater]

    class JudgementSubmitInput(serializers.Serializer):
        client_submission_id = serializers.CharField(max_length=64)
        ranking = serializers.ListField(
            child=serializers.ListField(child=serializers.IntegerField(), allow_empty=False),
            required=False,
            allow_null=True,
            default=None,
        )
        margin = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0)
        all_bad = serializers.BooleanField(required=False, default=False)
        likert = serializers.DictField(child=serializers.IntegerField(), required=False, default=dict)
        flags = serializers.DictField(
            child=serializers.ListField(child=serializers.ChoiceField(choices=Flag.values)),
            required=False,
            default=dict,
        )
        rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)

    class JudgementSubmitOutput(serializers.Serializer):
        judgement_id = serializers.IntegerField()
        task_id = serializers.IntegerField()
        ranking = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
        seconds_spent = serializers.FloatField()

    @extend_schema(request=JudgementSubmitInput, responses={201: JudgementSubmitOutput, 200: JudgementSubmitOutput})
    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = self.JudgementSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        judgement, created = services.judgement_submit(rater=request.user, task_id=task_id, **data.validated_data)
        return Response(
            {
                "judgement_id": judgement.pk,
                "task_id": judgement.task_id,
                "ranking": judgement.ranking,
                "seconds_spent": judgement.seconds_spent,
            },
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class TaskSkipApi(APIView):
    """POST {"reason"}: pass on a task the rater holds."""

    permission_classes = [permissions.IsRater]

    class TaskSkipInput(serializers.Serializer):
        reason = serializers.CharField(max_length=2000)

    class TaskSkipOutput(serializers.Serializer):
        task_id = serializers.IntegerField()
        state = serializers.CharField()

    @extend_schema(request=TaskSkipInput, responses=TaskSkipOutput)
    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = self.TaskSkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_skip(rater=request.user, task_id=task_id, **data.validated_data)
        return Response({"task_id": task_id, "state": assignment.state})


class TaskProblemReportApi(APIView):
    """POST {"message"}: report a problem with a task; the rater moves on to another."""

    permission_classes = [permissions.IsRater]

    class TaskProblemReportInput(serializers.Serializer):
        message = serializers.CharField(max_length=5000)

    class TaskProblemReportOutput(serializers.Serializer):
        report_id = serializers.IntegerField()
        task_id = serializers.IntegerField()

    @extend_schema(request=TaskProblemReportInput, responses={201: TaskProblemReportOutput})
    def post(self, request: Request, task_id: int) -> Response:
        _task_for_rater(request, task_id)
        data = self.TaskProblemReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.task_problem_report_create(rater=request.user, task_id=task_id, **data.validated_data)
        return Response({"report_id": report.pk, "task_id": task_id}, status=status.HTTP_201_CREATED)


class DemonstrationNextApi(APIView):
    """GET [?exclude=1,2]: a prompt of the project this rater has not written a demonstration for.
    204 when none is left."""

    permission_classes = [permissions.IsRater]

    class DemonstrationNextQuery(serializers.Serializer):
        exclude = serializers.RegexField(r"^\d+(,\d+)*$", required=False, help_text="Prompt ids passed over.")

    class DemonstrationNextOutput(serializers.Serializer):
        prompt_id = serializers.IntegerField()
        conversation = ConversationTurnOutput(many=True)

    @extend_schema(parameters=[DemonstrationNextQuery], responses={200: DemonstrationNextOutput, 204: None})
    def get(self, request: Request, slug: str) -> Response:
        project = _project_for_rater(request, slug)
        query = self.DemonstrationNextQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        exclude = [int(part) for part in query.validated_data.get("exclude", "").split(",") if part]
        prompt = selectors.prompt_next_for_demonstration(project=project, author=request.user, exclude=exclude)
        if prompt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"prompt_id": prompt.pk, "conversation": conversation_payload(prompt.messages)})


class DemonstrationSubmitApi(APIView):
    """POST {"text", "client_submission_id"}: the rater's ideal reply to a prompt."""

    permission_classes = [permissions.IsRater]

    class DemonstrationSubmitInput(serializers.Serializer):
        text = serializers.CharField(max_length=50000, trim_whitespace=False)
        client_submission_id = serializers.CharField(max_length=64)

    class DemonstrationSubmitOutput(serializers.Serializer):
        demonstration_id = serializers.IntegerField()
        prompt_id = serializers.IntegerField()

    @extend_schema(
        request=DemonstrationSubmitInput, responses={201: DemonstrationSubmitOutput, 200: DemonstrationSubmitOutput}
    )
    def post(self, request: Request, prompt_id: int) -> Response:
        prompt = get_object_or_404(
            Prompt.objects.filter(project__in=permissions.projects_visible_to(request.user)), pk=prompt_id
        )
        data = self.DemonstrationSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration, created = services.demonstration_submit(
            author=request.user, prompt=prompt, **data.validated_data
        )
        return Response(
            {"demonstration_id": demonstration.pk, "prompt_id": prompt.pk},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CritiqueChainNextApi(APIView):
    """GET: a critique chain of the project waiting for review (the oldest one this rater has not passed over),
    or 204 when none is left."""

    permission_classes = [permissions.IsRater]

    class CritiqueChainNextQuery(serializers.Serializer):
        exclude = serializers.RegexField(r"^\d+(,\d+)*$", required=False, help_text="Chain ids passed over.")

    class CritiqueRoundOutput(serializers.Serializer):
        number = serializers.IntegerField()
        principle = serializers.CharField()
        critique = serializers.CharField()
        revision_html = serializers.CharField()

    class CritiqueChainOutput(serializers.Serializer):
        chain_id = serializers.IntegerField()
        conversation = ConversationTurnOutput(many=True)
        initial_response_html = serializers.CharField()
        rounds = serializers.ListField(child=serializers.DictField())
        final_revision = serializers.CharField()

    @extend_schema(parameters=[CritiqueChainNextQuery], responses={200: CritiqueChainOutput, 204: None})
    def get(self, request: Request, slug: str) -> Response:
        project = _project_for_rater(request, slug)
        query = self.CritiqueChainNextQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        exclude = [int(part) for part in query.validated_data.get("exclude", "").split(",") if part]
        chain = selectors.critique_chain_next_for_review(project=project, exclude=exclude)
        if chain is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {
                "chain_id": chain.pk,
                "conversation": conversation_payload(chain.prompt.messages),
                "initial_response_html": markdown_to_safe_html(chain.initial_response),
                "rounds": [
                    {
                        "number": r.number,
                        "principle": r.principle.name,
                        "critique": r.critique,
                        "revision_html": markdown_to_safe_html(r.revision),
                    }
                    for r in chain.rounds.select_related("principle")
                ],  # fmt: skip
                "final_revision": chain.final_revision,
            }
        )


class CritiqueChainReviewApi(APIView):
    """POST {"action": "accept" | "edit" | "reject", "text"}: review a chain's final revision; an accepted (or
    edited) revision becomes a demonstration."""

    permission_classes = [permissions.IsRater]

    class CritiqueChainReviewInput(serializers.Serializer):
        action = serializers.ChoiceField(choices=["accept", "edit", "reject"])
        text = serializers.CharField(required=False, allow_blank=True, default="", max_length=50000)

    class CritiqueChainReviewOutput(serializers.Serializer):
        chain_id = serializers.IntegerField()
        review_status = serializers.CharField()
        demonstration_id = serializers.IntegerField(allow_null=True)

    @extend_schema(request=CritiqueChainReviewInput, responses=CritiqueChainReviewOutput)
    def post(self, request: Request, chain_id: int) -> Response:
        chain = get_object_or_404(
            CritiqueChain.objects.filter(project__in=permissions.projects_visible_to(request.user)), pk=chain_id
        )
        data = self.CritiqueChainReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        chain = services.critique_chain_review(chain=chain, reviewer=request.user, **data.validated_data)
        return Response(
            {"chain_id": chain.pk, "review_status": chain.review_status, "demonstration_id": chain.demonstration_id}
        )


# --- Administration: projects, prompts, responses, tasks ------------------------------------------------------


def _project_for_staff(request: Request, slug: str) -> Project:
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise NotFound(f"There is no project '{slug}'.")
    return project


class ProjectOutput(serializers.ModelSerializer):
    task_kinds = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "guidelines", "task_kinds", "compare_enabled", "rank_enabled", "rate_enabled",
            "demonstrate_enabled", "responses_per_task", "overlap", "gold_rate", "lease_timeout", "created_at",
        ]  # fmt: skip


class ProjectInput(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.all(), many=True, required=False
    )

    class Meta:
        model = Project
        fields = [
            "name", "slug", "guidelines", "compare_enabled", "rank_enabled", "rate_enabled", "demonstrate_enabled",
            "responses_per_task", "overlap", "gold_rate", "lease_timeout", "members",
        ]  # fmt: skip
        validators = []  # the service checks uniqueness and constraints, and says what is wrong


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
        return Response(ProjectOutput(_project_for_rater(request, slug)).data)

    @extend_schema(request=ProjectInput, responses=ProjectOutput)
    def patch(self, request: Request, slug: str) -> Response:
        project = _project_for_staff(request, slug)
        data = ProjectInput(project, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=project, **data.validated_data)
        return Response(ProjectOutput(project).data)


class PromptOutput(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "messages", "source", "external_id", "metadata", "created_at"]


class PromptInput(serializers.Serializer):
    messages = serializers.ListField(child=serializers.DictField(child=serializers.CharField()), required=False)
    prompt = serializers.CharField(required=False, help_text="A plain prompt: one user message.")
    source = serializers.CharField(required=False, default="api", max_length=200)
    external_id = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)
    metadata = serializers.DictField(required=False, default=dict)

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
        return Prompt.objects.filter(project=_project_for_staff(self.request, self.kwargs["slug"])).order_by("id")

    @extend_schema(request=PromptInput, responses={201: PromptOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_staff(request, slug)
        data = PromptInput(data=request.data)
        data.is_valid(raise_exception=True)
        prompt = services.prompt_create(project=project, **data.validated_data)
        return Response(PromptOutput(prompt).data, status=status.HTTP_201_CREATED)


class ResponseOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelResponse
        fields = ["id", "prompt", "text", "origin", "model_version", "metadata", "created_at"]


class ResponseInput(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, allow_blank=True)
    origin = serializers.CharField(default=ModelResponse.HUMAN, max_length=200)
    metadata = serializers.DictField(required=False, default=dict)


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
    prompt_id = serializers.IntegerField()
    response_ids = serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=9)
    required_judgements = serializers.IntegerField(required=False, min_value=1, allow_null=True, default=None)
    gold_ranking = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()), required=False, allow_null=True, default=None
    )


@extend_schema_view(get=extend_schema(parameters=[OpenApiParameter("status", str, enum=ComparisonTask.Status.values)]))
class TaskListApi(generics.ListAPIView):
    """GET (staff): the project's tasks (``?status=open``). POST (staff): a task over a prompt's responses."""

    permission_classes = [permissions.IsStaff]
    serializer_class = TaskOutput

    def get_queryset(self):
        project = _project_for_staff(self.request, self.kwargs["slug"])
        tasks = ComparisonTask.objects.filter(project=project).prefetch_related("slots").order_by("id")
        if self.request.query_params.get("status"):
            tasks = tasks.filter(status=self.request.query_params["status"])
        return tasks

    @extend_schema(request=TaskInput, responses={201: TaskOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_staff(request, slug)
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
    rater = serializers.SlugRelatedField(slug_field="username", read_only=True)

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
        project = _project_for_rater(self.request, self.kwargs["slug"])
        return (
            permissions.judgements_visible_to(self.request.user)
            .filter(task__project=project)
            .select_related("rater")
            .order_by("id")
        )


class DemonstrationOutput(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Demonstration
        fields = ["id", "prompt", "author", "origin", "text", "created_at"]


class DemonstrationListApi(generics.ListAPIView):
    """GET: the project's demonstrations; a rater sees only their own."""

    permission_classes = [permissions.IsRater]
    serializer_class = DemonstrationOutput

    def get_queryset(self):
        project = _project_for_rater(self.request, self.kwargs["slug"])
        demonstrations = Demonstration.objects.filter(prompt__project=project).select_related("author").order_by("id")
        if not permissions.is_staff(self.request.user):
            demonstrations = demonstrations.filter(author=self.request.user)
        return demonstrations


# --- Data in and out: imports, exports, snapshots -------------------------------------------------------------


class ImportInput(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=["auto", *importers.FILE_FORMATS], default="auto")
    kind = serializers.ChoiceField(choices=["auto", *importers.KINDS], default="auto")
    origin = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)
    response_origin = serializers.CharField(required=False, default="imported", max_length=200)


class ImportOutput(serializers.Serializer):
    kind = serializers.CharField()
    records = serializers.IntegerField()
    created = serializers.DictField(child=serializers.IntegerField())
    skipped = serializers.DictField(child=serializers.IntegerField())


class ImportApi(APIView):
    """POST (staff, multipart): import a JSONL, CSV or Parquet file into the project, all or nothing."""

    permission_classes = [permissions.IsStaff]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": ImportInput}, responses={201: ImportOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_staff(request, slug)
        data = ImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        result = services.dataset_import_file(
            project=project,
            source=upload.file,
            name=upload.name,
            file_format=data.validated_data["format"],
            kind=data.validated_data["kind"],
            origin=data.validated_data["origin"],
            response_origin=data.validated_data["response_origin"],
        )
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class ExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=exporters.FILE_FORMATS, default="jsonl")
    conversational = serializers.BooleanField(default=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    rater = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    source = serializers.ChoiceField(choices=["human", "ai"], required=False)
    gold = serializers.ChoiceField(choices=["include", "exclude", "only"], default="include")


def _selection(project: Project, query: dict) -> selectors.ExportFilter:
    return selectors.ExportFilter(
        project_id=project.pk,
        since=query.get("since"),
        until=query.get("until"),
        raters=tuple(query.get("rater", ())),
        source=query.get("source"),
        gold=query.get("gold", "include"),
    )


CONTENT_TYPES = {"jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet"}


class ExportApi(APIView):
    """GET (staff): download an export (``preference``, ``ranking``, ``sft``, ``hh``), streamed as it is read."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(parameters=[ExportQuery], responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, slug: str, kind: str) -> HttpResponseBase:
        project = _project_for_staff(request, slug)
        if kind not in exporters.EXPORT_KINDS:
            raise NotFound(f"There is no export '{kind}'; use one of {', '.join(exporters.EXPORT_KINDS)}.")
        query = ExportQuery(data={**request.query_params.dict(), "rater": request.query_params.getlist("rater")})
        query.is_valid(raise_exception=True)
        options = query.validated_data
        selection = _selection(project, options)
        file_format = options["format"]
        filename = f"{project.slug}-{kind}.{file_format}"
        if file_format == "jsonl":
            stats = exporters.ExportStats()
            records = exporters.export_records(kind, selection, stats, conversational=options["conversational"])
            response = StreamingHttpResponse(exporters.jsonl_chunks(records), content_type=CONTENT_TYPES["jsonl"])
        else:
            spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 (FileResponse closes it)
            exporters.write_export(kind, file_format, selection, spool, conversational=options["conversational"])
            spool.seek(0)
            response = FileResponse(spool, content_type=CONTENT_TYPES["parquet"])
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class SnapshotOutput(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id", "project", "kind", "file_format", "filters", "path", "sha256", "row_count", "counts",
            "code_version", "created_by", "created_at", "download",
        ]  # fmt: skip

    def get_download(self, snapshot: DatasetSnapshot) -> str:
        return f"/api/v1/snapshots/{snapshot.pk}/download"


class SnapshotInput(ExportQuery):
    kind = serializers.ChoiceField(choices=exporters.EXPORT_KINDS)


class SnapshotListApi(generics.ListAPIView):
    """GET (staff): the project's snapshots. POST (staff): freeze an export as a new snapshot."""

    permission_classes = [permissions.IsStaff]
    serializer_class = SnapshotOutput

    def get_queryset(self):
        project = _project_for_staff(self.request, self.kwargs["slug"])
        return DatasetSnapshot.objects.filter(project=project).order_by("-id")

    @extend_schema(request=SnapshotInput, responses={201: SnapshotOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_staff(request, slug)
        data = SnapshotInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        snapshot = services.dataset_snapshot_create(
            project=project,
            kind=options["kind"],
            file_format=options["format"],
            selection=_selection(project, options),
            conversational=options["conversational"],
            created_by=request.user,
        )
        return Response(SnapshotOutput(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDetailApi(APIView):
    """GET (staff): one snapshot."""

    permission_classes = [permissions.IsStaff]
    serializer_class = SnapshotOutput

    def get(self, request: Request, snapshot_id: int) -> Response:
        return Response(SnapshotOutput(get_object_or_404(DatasetSnapshot, pk=snapshot_id)).data)


class SnapshotDownloadApi(APIView):
    """GET (staff): the snapshot's file, byte for byte as frozen."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, snapshot_id: int) -> HttpResponseBase:
        snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
        path = services.snapshot_path(snapshot)
        if not path.is_file():
            raise NotFound(f"The file of snapshot {snapshot.pk} is missing from the artefacts folder.")
        response = FileResponse(open(path, "rb"), content_type=CONTENT_TYPES[snapshot.file_format])  # noqa: SIM115
        response["Content-Disposition"] = f'attachment; filename="{path.name}"'
        response["X-Content-SHA256"] = snapshot.sha256
        return response
