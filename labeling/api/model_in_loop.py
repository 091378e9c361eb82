"""The model in the loop (staff): the current reward model against raters on new judgements, and the drift rule."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, selectors
from labeling.api.access import project_for_staff


class AgreementQuery(serializers.Serializer):
    slice = serializers.CharField(
        default=selectors.ORIGIN_SLICE,
        max_length=200,
        help_text="Slice by the responses' origins ('origin') or by a prompt metadata key.",
    )


class FigureOutput(serializers.Serializer):
    name = serializers.CharField(help_text="The rater, week or slice; 'newest' or 'all'.")
    agreement = serializers.FloatField(allow_null=True, help_text="Share of decided pairs ordered as the rater did.")
    low = serializers.FloatField(allow_null=True, help_text="95% Wilson interval.")
    high = serializers.FloatField(allow_null=True)
    pairs = serializers.IntegerField()
    judgements = serializers.IntegerField()


class DriftOutput(serializers.Serializer):
    window = serializers.IntegerField()
    margin = serializers.FloatField()
    held_out_accuracy = serializers.FloatField(allow_null=True)
    newest = FigureOutput()
    warning = serializers.BooleanField()


class AgreementOutput(serializers.Serializer):
    reward_model = serializers.CharField(allow_null=True)
    held_out_accuracy = serializers.FloatField(allow_null=True)
    since = serializers.DateTimeField(allow_null=True, help_text="Judgements after this are checked.")
    unchecked = serializers.IntegerField(help_text="New judgements whose responses the model has not scored yet.")
    scored_open_responses = serializers.IntegerField()
    open_responses = serializers.IntegerField()
    slice_key = serializers.CharField()
    slice_keys = serializers.ListField(child=serializers.CharField())
    overall = FigureOutput(allow_null=True)
    by_rater = FigureOutput(many=True)
    by_week = FigureOutput(many=True)
    by_slice = FigureOutput(many=True)
    drift = DriftOutput(allow_null=True)


class RewardAgreementApi(APIView):
    """GET (staff): how often the current reward model orders new human judgements' responses as the raters did,
    overall, by rater, week and slice, with 95% intervals; and the drift warning."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(parameters=[AgreementQuery], responses=AgreementOutput)
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        query = AgreementQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        agreement = selectors.reward_model_agreement(project=project, slice_key=query.validated_data["slice"])
        return Response(AgreementOutput(agreement.as_dict()).data)
