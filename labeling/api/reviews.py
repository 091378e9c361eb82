"""The review queue's calls, for reviewers: the next task whose judgements disagree, with every judgement (the
raters unnamed), and the decision on it."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, selectors, services
from labeling.api.rating import LABELS, ConversationTurnOutput, conversation_payload
from labeling.validation import ID_MAX, K_MAX


class ReviewResponseOutput(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField(help_text="A, B, C ... in the task's stored order.")  # type: ignore[assignment]  # a field named like a Field attribute
    html = serializers.CharField(help_text="Sanitised HTML rendered from Markdown.")


class ReviewJudgementOutput(serializers.Serializer):
    rater = serializers.CharField(help_text='"rater 1", "rater 2", ...: never a name.')
    ranking = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    margin = serializers.FloatField(allow_null=True)
    all_bad = serializers.BooleanField()
    rationale = serializers.CharField(allow_blank=True)
    flags = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ReviewOutput(serializers.Serializer):
    review_id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    reason = serializers.CharField()
    conversation = ConversationTurnOutput(many=True)
    responses = ReviewResponseOutput(many=True)
    judgements = ReviewJudgementOutput(many=True)


class ReviewNextApi(APIView):
    """GET: the oldest task of the project in the review queue (not one the reviewer judged), with every
    judgement; 204 when the queue is empty."""

    permission_classes = [permissions.IsReviewer]

    @extend_schema(responses={200: ReviewOutput, 204: None})
    def get(self, request: Request, slug: str) -> Response:
        project = get_object_or_404(permissions.projects_reviewable_by(request.user), slug=slug)
        item = selectors.review_next(project=project, reviewer=request.user)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        content = selectors.task_content(task_id=item.task_id)
        ids = content.response_ids
        return Response(
            ReviewOutput(
                {
                    "review_id": item.pk,
                    "task_id": item.task_id,
                    "reason": item.reason,
                    "conversation": conversation_payload(content.messages, content.messages_html),
                    "responses": [
                        {"id": response_id, "label": LABELS[position], "html": content.html[response_id]}
                        for position, response_id in enumerate(ids)
                    ],
                    "judgements": selectors.review_judgements(task_id=item.task_id),
                }
            ).data
        )


class ReviewDecisionInput(serializers.Serializer):
    ranking = serializers.ListField(
        child=serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=ID_MAX), allow_empty=False, max_length=K_MAX
        ),
        required=False,
        max_length=K_MAX,
        help_text="The final ranking: groups of response ids, best first.",
    )
    send_back = serializers.BooleanField(default=False, help_text="Reopen the task for one more judgement instead.")

    def validate(self, attrs):
        if attrs.get("send_back") == ("ranking" in attrs):
            raise serializers.ValidationError("Give either the final ranking or send_back: true.")
        return attrs


class ReviewDecisionOutput(serializers.Serializer):
    review_id = serializers.IntegerField()
    status = serializers.CharField()


class ReviewDecisionApi(APIView):
    """POST {"ranking"} or {"send_back": true}: settle a review (409 when it was settled already)."""

    permission_classes = [permissions.IsReviewer]

    @extend_schema(request=ReviewDecisionInput, responses=ReviewDecisionOutput)
    def post(self, request: Request, review_id: int) -> Response:
        data = ReviewDecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        reviewer = permissions.signed_in(request.user)
        projects = permissions.projects_reviewable_by(reviewer)
        if data.validated_data["send_back"]:
            item = services.review_send_back(item_id=review_id, reviewer=reviewer, projects=projects)
        else:
            item = services.review_decide(
                item_id=review_id, reviewer=reviewer, ranking=data.validated_data["ranking"], projects=projects
            )
        return Response(ReviewDecisionOutput({"review_id": item.pk, "status": item.status}).data)
