"""Training runs and model versions (staff), with the admin's permissions: list and start runs of every kind
(the config is checked by the kind's own admin form), follow one (status, phase, progress, time left, metrics,
curves), cancel it (those who may change runs); list model versions and make one current."""

from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import permissions, runs
from labeling.api.access import project_for_staff
from labeling.errors import ApplicationError, Conflict, PermissionDenied
from labeling.models import ModelVersion, TrainingRun


def runs_with_versions():
    """Runs with what their answers show beside them (project, author, the version registered) in one query."""
    produced = ModelVersion.objects.filter(training_run=OuterRef("pk")).values("pk")[:1]
    return TrainingRun.objects.select_related("project", "created_by").annotate(model_version_id=Subquery(produced))


class RunOutput(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)  # type: ignore[var-annotated]
    phase = serializers.SerializerMethodField()
    eta_s = serializers.SerializerMethodField(help_text="Seconds left in the training phase, while it trains.")
    model_version = serializers.SerializerMethodField(help_text="The model version the run registered.")

    class Meta:
        model = TrainingRun
        fields = [
            "id", "project", "kind", "status", "phase", "progress", "eta_s", "base_model", "parent_model",
            "reward_model", "snapshot", "config", "metrics", "error", "model_version", "worker", "created_by",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip

    def get_phase(self, run: TrainingRun) -> str:
        return str((run.metrics or {}).get("phase") or ("queued" if run.status == TrainingRun.Status.QUEUED else ""))

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_eta_s(self, run: TrainingRun) -> float | None:
        return runs.seconds_left(run) if run.status == TrainingRun.Status.RUNNING else None

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_model_version(self, run: TrainingRun) -> int | None:
        if hasattr(run, "model_version_id"):  # annotated by runs_with_versions
            return run.model_version_id
        return ModelVersion.objects.filter(training_run=run).values_list("pk", flat=True).first()


class RunDetailOutput(RunOutput):
    history = serializers.JSONField(help_text="The run's curve points, in order (with ?history=true).")

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "history"]


class RunStartInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    config = serializers.DictField(
        default=dict,
        help_text="The run's settings: the fields of the kind's admin page, by name (a version or snapshot by id); "
        "those left out take the page's defaults.",
    )


class RunListApi(generics.ListAPIView):
    """GET (staff): the project's runs, newest first (``?kind=``, ``?status=``). POST (staff): start a run of
    any kind with its config; 201 with the queued run, 400 naming the fields that are wrong."""

    permission_classes = [permissions.IsStaff]
    serializer_class = RunOutput

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, enum=TrainingRun.Kind.values),
            OpenApiParameter("status", str, enum=TrainingRun.Status.values),
        ]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = project_for_staff(self.request, self.kwargs["slug"])
        queryset = runs_with_versions().filter(project=project).order_by("-id")
        for name in ("kind", "status"):
            if self.request.query_params.get(name):
                queryset = queryset.filter(**{name: self.request.query_params[name]})
        return queryset

    @extend_schema(request=RunStartInput, responses={201: RunOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = RunStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        spec = runs.spec_for(data.validated_data["kind"])
        config = data.validated_data["config"]
        # A setting left out takes the default the admin page shows for it.
        defaults = {name: field.initial for name, field in spec.form(project=project).fields.items()}
        form = spec.form(
            {**{name: value for name, value in defaults.items() if value is not None}, **config}, project=project
        )
        unknown = sorted(set(config) - set(form.fields))
        if unknown:
            raise ApplicationError(
                f"A {spec.kind} run takes no {', '.join(unknown)}; it takes {', '.join(form.fields)}.",
                {"fields": {name: ["Unknown setting."] for name in unknown}},
            )
        if not form.is_valid():
            fields = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
            raise ApplicationError("The run's config is not valid.", {"fields": fields})
        run = spec.start(project=project, created_by=permissions.signed_in(request.user), **form.cleaned_data)
        return Response(RunOutput(run).data, status=status.HTTP_201_CREATED)


class RunDetailApi(APIView):
    """GET (staff): one run as it stands: status, phase, progress, time left, metrics; its curve points with
    ``?history=true``."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(
        parameters=[OpenApiParameter("history", bool, description="include the curve points")],
        responses={200: RunDetailOutput},
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = get_object_or_404(runs_with_versions(), pk=run_id)
        if request.query_params.get("history", "").lower() in ("1", "true", "yes"):
            return Response(RunDetailOutput(run).data)
        return Response(RunOutput(run).data)


class RunCancelApi(APIView):
    """POST (staff who may change runs, as in the admin): cancel a queued run at once, or ask a running one to
    stop; 409 for a run that has ended."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(request=None, responses={200: RunOutput})
    def post(self, request: Request, run_id: int) -> Response:
        if not request.user.has_perm("labeling.change_trainingrun"):
            raise PermissionDenied("Cancelling a run needs the permission to change training runs.")
        run = get_object_or_404(TrainingRun, pk=run_id)
        if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            raise Conflict(f"Run {run.pk} has ended ({run.status}): there is nothing to cancel.")
        return Response(RunOutput(runs.training_run_cancel(run=run)).data)


class ModelOutput(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)  # type: ignore[var-annotated]

    class Meta:
        model = ModelVersion
        fields = [
            "id", "project", "kind", "name", "is_current", "base_model", "parent", "snapshot", "training_run",
            "content_hash", "metrics", "created_at",
        ]  # fmt: skip


class ModelListApi(generics.ListAPIView):
    """GET (staff): the project's model versions, newest first (``?kind=reward`` or ``policy``)."""

    permission_classes = [permissions.IsStaff]
    serializer_class = ModelOutput

    @extend_schema(parameters=[OpenApiParameter("kind", str, enum=ModelVersion.Kind.values)])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = project_for_staff(self.request, self.kwargs["slug"])
        queryset = ModelVersion.objects.filter(project=project).select_related("project").order_by("-id")
        if self.request.query_params.get("kind"):
            queryset = queryset.filter(kind=self.request.query_params["kind"])
        return queryset


class ModelDetailApi(APIView):
    """GET (staff): one model version."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(responses={200: ModelOutput})
    def get(self, request: Request, model_id: int) -> Response:
        return Response(ModelOutput(get_object_or_404(ModelVersion, pk=model_id)).data)


class ModelMakeCurrentApi(APIView):
    """POST (staff, as the admin's "make current"): the version becomes its project's current one of its kind."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(request=None, responses={200: ModelOutput})
    def post(self, request: Request, model_id: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=model_id)
        return Response(ModelOutput(runs.model_version_make_current(version=version)).data)
