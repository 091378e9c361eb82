"""The REST API under /api/v1/. Each class parses input, checks permissions, calls one service or selector
and serializes the answer. The rater pages use these same endpoints."""

from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, selectors, services
from labeling.errors import NotFound
from labeling.models import Assignment, ComparisonTask, Flag, Project, Prompt
from labeling.rendering import markdown_to_safe_html

LABELS = "ABCDEFGHI"


def _project_for_rater(request: Request, slug: str) -> Project:
    """The project, if the user may label it; 404 otherwise, so that other projects stay invisible."""
    project = permissions.projects_visible_to(request.user).filter(slug=slug).first()
    if project is None:
        raise NotFound(f"No project '{slug}' is open to you.")
    return project


def _task_for_rater(request: Request, task_id: int) -> ComparisonTask:
    task = ComparisonTask.objects.filter(pk=task_id, project__in=permissions.projects_visible_to(request.user)).first()
    if task is None:
        raise NotFound(f"There is no task {task_id} open to you.")
    return task


def conversation_payload(messages: list[dict]) -> list[dict]:
    return [{"role": turn["role"], "html": markdown_to_safe_html(turn["content"])} for turn in messages]


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
    content = selectors.task_content(task_id=assignment.task_id)
    order = assignment.shown_order or sorted(content.texts)
    kind = task_kind(project, len(order))
    return {
        "task_id": assignment.task_id,
        "kind": kind,
        "rate": project.rate_enabled,
        "expires_at": assignment.expires_at.isoformat(),
        "conversation": conversation_payload(content.messages),
        "responses": [
            {
                "id": response_id,
                "label": LABELS[position] if kind == "compare" else str(position + 1),
                "html": markdown_to_safe_html(content.texts[response_id]),
                "text": content.texts[response_id],
            }
            for position, response_id in enumerate(order)
        ],
    }


class TaskNextApi(APIView):
    """POST: lease the rater's next task in a project (or return the one they hold). 204 when none is left."""

    permission_classes = [permissions.IsRater]

    def post(self, request: Request, slug: str) -> Response:
        project = _project_for_rater(request, slug)
        assignment = services.task_next_for_rater(project=project, rater=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(task_payload(assignment, project))


class JudgementSubmitApi(APIView):
    """POST: the rater's judgement on a task they hold. 201 when stored, 200 when this submission id was
    stored before (a retry)."""

    permission_classes = [permissions.IsRater]

    class InputSerializer(serializers.Serializer):
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

    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = self.InputSerializer(data=request.data)
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

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=2000)

    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_skip(rater=request.user, task_id=task_id, **data.validated_data)
        return Response({"task_id": task_id, "state": assignment.state})


class TaskProblemReportApi(APIView):
    """POST {"message"}: report a problem with a task; the rater moves on to another."""

    permission_classes = [permissions.IsRater]

    class InputSerializer(serializers.Serializer):
        message = serializers.CharField(max_length=5000)

    def post(self, request: Request, task_id: int) -> Response:
        _task_for_rater(request, task_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.task_problem_report(rater=request.user, task_id=task_id, **data.validated_data)
        return Response({"report_id": report.pk, "task_id": task_id}, status=status.HTTP_201_CREATED)


class DemonstrationNextApi(APIView):
    """GET [?exclude=1,2]: a prompt of the project this rater has not written a demonstration for.
    204 when none is left."""

    permission_classes = [permissions.IsRater]

    class QuerySerializer(serializers.Serializer):
        exclude = serializers.RegexField(r"^\d+(,\d+)*$", required=False, help_text="Prompt ids passed over.")

    def get(self, request: Request, slug: str) -> Response:
        project = _project_for_rater(request, slug)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        exclude = [int(part) for part in query.validated_data.get("exclude", "").split(",") if part]
        prompt = selectors.prompt_next_for_demonstration(project=project, author=request.user, exclude=exclude)
        if prompt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"prompt_id": prompt.pk, "conversation": conversation_payload(prompt.messages)})


class DemonstrationSubmitApi(APIView):
    """POST {"text", "client_submission_id"}: the rater's ideal reply to a prompt."""

    permission_classes = [permissions.IsRater]

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(max_length=50000, trim_whitespace=False)
        client_submission_id = serializers.CharField(max_length=64)

    def post(self, request: Request, prompt_id: int) -> Response:
        prompt = get_object_or_404(
            Prompt.objects.filter(project__in=permissions.projects_visible_to(request.user)), pk=prompt_id
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration, created = services.demonstration_submit(
            author=request.user, prompt=prompt, **data.validated_data
        )
        return Response(
            {"demonstration_id": demonstration.pk, "prompt_id": prompt.pk},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
