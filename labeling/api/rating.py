"""The calls the rater pages make: next task, judge, skip, report a problem, demonstrations, critique-chain
reviews."""

import copy
from contextlib import suppress

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, selectors, services
from labeling.api.access import project_for_rater, task_for_rater
from labeling.errors import ApplicationError, NotFound
from labeling.models import (
    Assignment,
    CritiqueChain,
    Flag,
    Project,
    Prompt,
)
from labeling.rendering import markdown_to_safe_html
from labeling.validation import ID_MAX, K_MAX, LIKERT_MAX, LIKERT_MIN, MARGIN_MAX, MARGIN_MIN

# Ids in a query string, comma-separated: up to 18 digits each, so that every one fits a database integer.
IDS = r"^(\d{1,18}(,\d{1,18})*)?$"

LABELS = "ABCDEFGHI"


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
    content = assignment.content or selectors.task_content(task_id=assignment.task_id)
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


def demonstrations_enabled(project: Project) -> None:
    """Demonstrations are read and written only in a project that asks for them (its page answers 404 too)."""
    if not project.demonstrate_enabled:
        raise NotFound(f"Project '{project.slug}' does not ask for demonstrations.")


class ConversationTurnOutput(serializers.Serializer):
    role = serializers.CharField()
    html = serializers.CharField(help_text="Sanitised HTML rendered from Markdown.")


class TaskResponseOutput(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField(help_text="A, B for comparisons; 1..K for rankings.")  # type: ignore[assignment]  # a field named like a Field attribute
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
        project = selectors.project_for_lease(user=request.user, slug=slug)
        if project is None:
            raise NotFound(f"No project '{slug}' is open to you.")
        assignment = services.assignment_lease_next(project=project, rater=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(task_payload(assignment, project))  # the hot path: see the package docstring


class SharedNestedFields(serializers.Serializer):
    """A serializer that copies only its top-level fields for each instance. DRF deep-copies every declared field
    and each field's children (a ranking is a list of lists of integers) for every serializer it builds, which was
    two thirds of the cost of validating a submission, the rater's hot path. Each top-level field is still a copy
    of its own, bound to this serializer; the nested children are shared, which is safe because validating keeps
    no state on a field (tests/labeling/test_api.py checks the answers against DRF's own copies, from threads)."""

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}


class JudgementSubmitInput(SharedNestedFields):
    client_submission_id = serializers.CharField(max_length=64)
    ranking = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=ID_MAX), allow_empty=False, max_length=K_MAX
        ),
        required=False,
        allow_null=True,
        default=None,
        max_length=K_MAX,
        help_text="Groups of response ids, best first; a group of several is a tie.",
    )
    margin = serializers.FloatField(
        required=False, allow_null=True, default=None, min_value=MARGIN_MIN, max_value=MARGIN_MAX,
        help_text="How much better the first group is: 1 (better) to 3 (much better).",
    )  # fmt: skip
    all_bad = serializers.BooleanField(required=False, default=False)
    likert = serializers.DictField(
        child=serializers.IntegerField(min_value=LIKERT_MIN, max_value=LIKERT_MAX), required=False, default=dict,
        help_text=f"A score from {LIKERT_MIN} to {LIKERT_MAX} per response id.",
    )  # fmt: skip
    flags = serializers.DictField(
        child=serializers.ListField(child=serializers.ChoiceField(choices=Flag.values), max_length=len(Flag.values)),
        help_text="Flags per response id.",
        required=False,
        default=dict,
    )
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=10000)


class JudgementSubmitQuery(serializers.Serializer):
    next = serializers.BooleanField(
        required=False, default=False,
        help_text="Answer with the rater's next task in the project as well (`next`), saving the page a round trip.",
    )  # fmt: skip


class JudgementSubmitOutput(serializers.Serializer):
    judgement_id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    ranking = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    seconds_spent = serializers.FloatField()
    next = TaskPayloadOutput(
        required=False, allow_null=True,
        help_text="With `?next=true`: the rater's next task, as the next-task call gives it, or null when none is "
        "left. Absent when no task could be leased for another reason (the rater was paused, or left the project): "
        "the next-task call then says why.",
    )  # fmt: skip


NEXT = JudgementSubmitQuery._declared_fields["next"]


def submit_wants_next(request: Request) -> bool:
    """``JudgementSubmitQuery``'s one field, read without building the serializer (the hot path: see the package
    docstring); a value that is not a boolean is a 400 naming ``next``, as the serializer would answer."""
    value = request.query_params.get("next")
    if value is None:
        return False
    try:
        return NEXT.to_internal_value(value)
    except serializers.ValidationError as error:
        raise serializers.ValidationError({"next": error.detail}) from error


def next_task_after(request: Request, judgement) -> dict | None:
    """The rater's next task in the project of the task they just judged (the lease the next-task call makes)."""
    project = selectors.project_for_lease_after(user=request.user, project=judgement.task.project)
    if project is None:
        raise NotFound("You are no longer a member of this project.")
    assignment = services.assignment_lease_next(project=project, rater=request.user)
    return None if assignment is None else task_payload(assignment, project)


class JudgementSubmitApi(APIView):
    """POST: the rater's judgement on a task they hold. 201 when stored, 200 when this submission id was
    stored before (a retry). With ``?next=true`` the answer also holds the rater's next task."""

    permission_classes = [permissions.IsRater]

    @extend_schema(
        parameters=[JudgementSubmitQuery],
        request=JudgementSubmitInput,
        responses={201: JudgementSubmitOutput, 200: JudgementSubmitOutput},
    )
    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = JudgementSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        wants_next = submit_wants_next(request)
        judgement, created = services.judgement_submit(rater=request.user, task_id=task_id, **data.validated_data)
        body = {  # the hot path: see the package docstring
            "judgement_id": judgement.pk,
            "task_id": judgement.task_id,
            "ranking": judgement.ranking,
            "seconds_spent": judgement.seconds_spent,
        }
        if wants_next:
            # The judgement is stored whatever happens here; without a task, the next-task call will say why.
            with suppress(ApplicationError):
                body["next"] = next_task_after(request, judgement)
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TaskSkipInput(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class TaskSkipOutput(serializers.Serializer):
    task_id = serializers.IntegerField()
    state = serializers.CharField()


class TaskSkipApi(APIView):
    """POST {"reason"}: pass on a task the rater holds."""

    permission_classes = [permissions.IsRater]

    @extend_schema(request=TaskSkipInput, responses=TaskSkipOutput)
    def post(self, request: Request, task_id: int) -> Response:
        # The service accepts only a task this rater holds, which they could only lease in their projects.
        data = TaskSkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_skip(rater=request.user, task_id=task_id, **data.validated_data)
        return Response(TaskSkipOutput({"task_id": task_id, "state": assignment.state}).data)


class TaskProblemReportInput(serializers.Serializer):
    message = serializers.CharField(max_length=5000)


class TaskProblemReportOutput(serializers.Serializer):
    report_id = serializers.IntegerField()
    task_id = serializers.IntegerField()


class TaskProblemReportApi(APIView):
    """POST {"message"}: report a problem with a task; the rater moves on to another."""

    permission_classes = [permissions.IsRater]

    @extend_schema(request=TaskProblemReportInput, responses={201: TaskProblemReportOutput})
    def post(self, request: Request, task_id: int) -> Response:
        task_for_rater(request, task_id)
        data = TaskProblemReportInput(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.task_problem_report_create(rater=request.user, task_id=task_id, **data.validated_data)
        return Response(
            TaskProblemReportOutput({"report_id": report.pk, "task_id": task_id}).data, status=status.HTTP_201_CREATED
        )


class DemonstrationNextQuery(serializers.Serializer):
    exclude = serializers.RegexField(IDS, required=False, help_text="Prompt ids passed over.")


class DemonstrationNextOutput(serializers.Serializer):
    prompt_id = serializers.IntegerField()
    conversation = ConversationTurnOutput(many=True)


class DemonstrationNextApi(APIView):
    """GET [?exclude=1,2]: a prompt of the project this rater has not written a demonstration for.
    204 when none is left."""

    permission_classes = [permissions.IsRater]

    @extend_schema(parameters=[DemonstrationNextQuery], responses={200: DemonstrationNextOutput, 204: None})
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_rater(request, slug)
        demonstrations_enabled(project)
        query = DemonstrationNextQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        exclude = [int(part) for part in query.validated_data.get("exclude", "").split(",") if part]
        prompt = selectors.prompt_next_for_demonstration(project=project, author=request.user, exclude=exclude)
        if prompt is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            DemonstrationNextOutput(
                {"prompt_id": prompt.pk, "conversation": conversation_payload(prompt.messages)}
            ).data
        )


class DemonstrationSubmitInput(serializers.Serializer):
    text = serializers.CharField(max_length=50000, trim_whitespace=False)
    client_submission_id = serializers.CharField(max_length=64)


class DemonstrationSubmitOutput(serializers.Serializer):
    demonstration_id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()


class DemonstrationSubmitApi(APIView):
    """POST {"text", "client_submission_id"}: the rater's ideal reply to a prompt."""

    permission_classes = [permissions.IsRater]

    @extend_schema(
        request=DemonstrationSubmitInput, responses={201: DemonstrationSubmitOutput, 200: DemonstrationSubmitOutput}
    )
    def post(self, request: Request, prompt_id: int) -> Response:
        prompt = get_object_or_404(
            Prompt.objects.filter(project__in=permissions.projects_visible_to(request.user)).select_related("project"),
            pk=prompt_id,
        )
        data = DemonstrationSubmitInput(data=request.data)
        data.is_valid(raise_exception=True)
        demonstrations_enabled(prompt.project)
        demonstration, created = services.demonstration_submit(
            author=request.user, prompt=prompt, **data.validated_data
        )
        return Response(
            DemonstrationSubmitOutput({"demonstration_id": demonstration.pk, "prompt_id": prompt.pk}).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CritiqueChainNextQuery(serializers.Serializer):
    exclude = serializers.RegexField(IDS, required=False, help_text="Chain ids passed over.")


class CritiqueRoundOutput(serializers.Serializer):
    number = serializers.IntegerField()
    principle = serializers.CharField()
    critique = serializers.CharField()
    revision_html = serializers.CharField()


class CritiqueChainOutput(serializers.Serializer):
    chain_id = serializers.IntegerField()
    conversation = ConversationTurnOutput(many=True)
    initial_response_html = serializers.CharField()
    rounds = CritiqueRoundOutput(many=True)
    final_revision = serializers.CharField()


class CritiqueChainNextApi(APIView):
    """GET: a critique chain of the project waiting for review (the oldest one this rater has not passed over),
    or 204 when none is left."""

    permission_classes = [permissions.IsRater]

    @extend_schema(parameters=[CritiqueChainNextQuery], responses={200: CritiqueChainOutput, 204: None})
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_rater(request, slug)
        query = CritiqueChainNextQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        exclude = [int(part) for part in query.validated_data.get("exclude", "").split(",") if part]
        chain = selectors.critique_chain_next_for_review(project=project, exclude=exclude)
        if chain is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            CritiqueChainOutput({
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
            }).data
        )  # fmt: skip


class CritiqueChainReviewInput(serializers.Serializer):
    action = serializers.ChoiceField(choices=["accept", "edit", "reject"])
    text = serializers.CharField(required=False, allow_blank=True, default="", max_length=50000)


class CritiqueChainReviewOutput(serializers.Serializer):
    chain_id = serializers.IntegerField()
    review_status = serializers.CharField()
    demonstration_id = serializers.IntegerField(allow_null=True)


class CritiqueChainReviewApi(APIView):
    """POST {"action": "accept" | "edit" | "reject", "text"}: review a chain's final revision; an accepted (or
    edited) revision becomes a demonstration."""

    permission_classes = [permissions.IsRater]

    @extend_schema(request=CritiqueChainReviewInput, responses=CritiqueChainReviewOutput)
    def post(self, request: Request, chain_id: int) -> Response:
        chain = get_object_or_404(
            CritiqueChain.objects.filter(project__in=permissions.projects_visible_to(request.user)), pk=chain_id
        )
        data = CritiqueChainReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        chain = services.critique_chain_review(
            chain=chain, reviewer=permissions.signed_in(request.user), **data.validated_data
        )
        review = {
            "chain_id": chain.pk,
            "review_status": chain.review_status,
            "demonstration_id": chain.demonstration_id,
        }
        return Response(CritiqueChainReviewOutput(review).data)
