"""Evaluation (staff): the eval prompts' split and the leaderboard of the versions a project's judgements compare."""

from django.http import HttpResponse, HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import leaderboard, permissions, runs, selectors, services, validation
from labeling.api.access import project_for_staff
from labeling.models import ModelVersion, Prompt
from training.config import EvaluateConfig


class LeaderboardQuery(serializers.Serializer):
    judge = serializers.ChoiceField(choices=selectors.JUDGES, default="human", help_text="Raters, or the AI labeller.")
    prompts = serializers.ChoiceField(
        choices=["eval", "all"], required=False, help_text="Default: eval prompts when the project has any."
    )
    reference = serializers.CharField(
        required=False, max_length=200, help_text="The version at strength 0 (default: the most compared)."
    )
    format = serializers.ChoiceField(choices=["json", "csv"], default="json")


class IntervalField(serializers.ListField):
    child = serializers.FloatField()


class StandingOutput(serializers.Serializer):
    name = serializers.CharField(help_text="The origin: a model version's name, an imported model, or human.")
    rank = serializers.IntegerField(allow_null=True)
    comparisons = serializers.IntegerField()
    strength = serializers.FloatField(allow_null=True, help_text="Bradley-Terry log-odds of beating the reference.")
    interval = IntervalField(allow_null=True, help_text="95% bootstrap interval.")
    controlled = serializers.FloatField(allow_null=True, help_text="Length-controlled strength.")
    controlled_interval = IntervalField(allow_null=True)
    win_rate = serializers.FloatField(allow_null=True, help_text="Against the reference, ties half.")
    win_interval = IntervalField(allow_null=True)
    reference_comparisons = serializers.IntegerField()
    mean_length = serializers.FloatField(allow_null=True, help_text="Characters.")


class LeaderboardOutput(serializers.Serializer):
    judge = serializers.CharField()
    prompts = serializers.CharField()
    reference = serializers.CharField(allow_null=True)
    comparisons = serializers.IntegerField()
    judgements = serializers.IntegerField()
    resamples = serializers.IntegerField()
    level = serializers.FloatField()
    length_effect = serializers.FloatField(allow_null=True)
    length_interval = IntervalField(allow_null=True)
    notes = serializers.ListField(child=serializers.CharField())
    standings = StandingOutput(many=True)


class LeaderboardApi(APIView):
    """GET (staff): the leaderboard of the versions compared in the project's judgements: Bradley-Terry strengths
    with 95% bootstrap intervals, raw and length-controlled, and win rates against the reference; JSON or CSV."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(
        parameters=[LeaderboardQuery],
        responses={(200, "application/json"): LeaderboardOutput, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, slug: str) -> HttpResponseBase:
        project = project_for_staff(request, slug)
        query = LeaderboardQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        options = query.validated_data
        prompts = options.get("prompts") or (
            "eval" if Prompt.objects.filter(project=project, is_eval=True).exists() else "all"
        )
        board = selectors.project_leaderboard(
            project=project, judge=options["judge"], eval_only=prompts == "eval", reference=options.get("reference")
        )
        if options["format"] == "csv":
            return HttpResponse(leaderboard.as_csv(board), content_type="text/csv")
        return Response(LeaderboardOutput({"judge": options["judge"], "prompts": prompts, **board.as_dict()}).data)


class EvalSplitInput(serializers.Serializer):
    fraction = serializers.FloatField(min_value=0.01, max_value=0.99, help_text="The share of prompts to hold out.")
    seed = serializers.IntegerField(default=0, min_value=0, max_value=2**32 - 1)


class EvalSplitOutput(serializers.Serializer):
    marked = serializers.IntegerField(help_text="Prompts this call made eval prompts.")
    eval_prompts = serializers.IntegerField()
    prompts = serializers.IntegerField()
    already_used = serializers.IntegerField(help_text="Of those marked: prompts with judgements or demonstrations.")


class EvalSplitApi(APIView):
    """POST (staff): mark training prompts as eval prompts, drawn at random with the seed, until they are the
    fraction of the project's prompts (eval prompts stay eval prompts)."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(request=EvalSplitInput, responses={200: EvalSplitOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = EvalSplitInput(data=request.data)
        data.is_valid(raise_exception=True)
        split = services.eval_prompts_split(project=project, **data.validated_data)
        return Response(EvalSplitOutput(split).data)


class EvaluationInput(serializers.Serializer):
    policies = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=validation.ID_MAX), required=False, default=list,
        max_length=20,
        help_text="Ids of policy versions of the project.",
    )  # fmt: skip
    base_models = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, default=list, max_length=20,
        help_text="Models by name (smollm2-135m-instruct, a Hugging Face id or a path), each a version.",
    )  # fmt: skip
    baseline = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=200,
        help_text="An origin whose existing answers to the eval prompts join the comparison.",
    )  # fmt: skip
    max_prompts = serializers.IntegerField(default=EvaluateConfig.max_prompts, min_value=0, max_value=1_000_000)
    max_new_tokens = serializers.IntegerField(default=EvaluateConfig.max_new_tokens, min_value=1, max_value=4096)
    temperature = serializers.FloatField(default=EvaluateConfig.temperature, min_value=0.01, max_value=10.0)


class EvaluationOutput(serializers.Serializer):
    run_id = serializers.IntegerField(source="pk")
    kind = serializers.CharField()
    status = serializers.CharField()
    versions = serializers.CharField(source="base_model")
    snapshot = serializers.IntegerField(source="snapshot_id")


class EvaluationApi(APIView):
    """POST (staff): start an evaluation run: the versions answer the project's eval prompts on the training
    workers, then every pair of versions meets in blinded pairwise tasks. Answers 202 with the run."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(request=EvaluationInput, responses={202: EvaluationOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = EvaluationInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        wanted = options.pop("policies")
        found = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY, pk__in=wanted)
        if found.count() != len(set(wanted)):
            raise ValidationError({"policies": ["Name policy versions of this project, each once."]})
        run = runs.evaluation_run_start(
            project=project, policies=list(found), created_by=permissions.signed_in(request.user), **options
        )
        return Response(EvaluationOutput(run).data, status=status.HTTP_202_ACCEPTED)
