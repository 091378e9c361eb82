"""Data in and out (staff): imports, exports and snapshots."""

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import artefacts, exporters, importers, permissions, selectors, services, validation
from labeling.api.access import project_for_staff
from labeling.errors import NotFound
from labeling.models import DatasetSnapshot, ImportJob, Project, User


class ImportInput(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=["auto", *importers.FILE_FORMATS], default="auto")
    kind = serializers.ChoiceField(choices=["auto", *importers.KINDS], default="auto")
    origin = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)
    response_origin = serializers.CharField(required=False, default="imported", max_length=200)
    skip_invalid = serializers.BooleanField(
        required=False, default=False,
        help_text="Leave out records that do not parse (counted and listed by line) instead of failing the import.",
    )  # fmt: skip


class ImportProgress(serializers.Serializer):
    records = serializers.IntegerField(help_text="Records imported so far.")
    bytes_read = serializers.IntegerField(allow_null=True, help_text="How far into the file (JSONL and CSV).")
    fraction = serializers.FloatField(allow_null=True, help_text="0 to 1, where the file's position says.")


class ImportOutput(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    created_by: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    url = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = [
            "id", "project", "status", "file_name", "file_size", "file_format", "kind", "origin", "response_origin",
            "skip_invalid", "progress", "records", "created", "skipped", "invalid", "error", "error_line",
            "error_field", "created_by",
            "created_at", "started_at", "finished_at", "url",
        ]  # fmt: skip

    @extend_schema_field(ImportProgress(allow_null=True))
    def get_progress(self, job: ImportJob) -> dict | None:
        return services.import_job_progress(job)

    def get_url(self, job: ImportJob) -> str:
        return services.import_job_url(job)


class ImportApi(generics.ListAPIView):
    """GET (staff): the project's imports, newest first. POST (staff, multipart): upload a JSONL, CSV or
    Parquet file to import, all or nothing; answers 202 with the job to poll (413 over ``IMPORT_MAX_BYTES``)."""

    permission_classes = [permissions.IsStaff]
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = ImportOutput

    def get_queryset(self):
        project = project_for_staff(self.request, self.kwargs["slug"])
        return ImportJob.objects.filter(project=project).select_related("created_by").order_by("-id")

    @extend_schema(request={"multipart/form-data": ImportInput}, responses={202: ImportOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        services.upload_size_check(services.declared_size(request.META))
        data = ImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        job = services.import_job_create(
            project=project, upload=options["file"], file_format=options["format"], kind=options["kind"],
            origin=options["origin"], response_origin=options["response_origin"],
            skip_invalid=options["skip_invalid"], created_by=permissions.signed_in(request.user),
        )  # fmt: skip
        headers = {"Location": services.import_job_url(job)}
        return Response(ImportOutput(job).data, status=status.HTTP_202_ACCEPTED, headers=headers)


class ImportDetailApi(APIView):
    """GET (staff): one import: its status, progress while it runs, then its counts or its error's line."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(responses={200: ImportOutput})
    def get(self, request: Request, import_id: int) -> Response:
        return Response(ImportOutput(get_object_or_404(ImportJob, pk=import_id)).data)


class ExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=exporters.FILE_FORMATS, default="jsonl")
    conversational = serializers.BooleanField(default=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    rater = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, default=list, max_length=validation.NAMES_MAX
    )
    source = serializers.ChoiceField(choices=["human", "ai"], required=False)  # type: ignore[assignment]  # a field named like a Field attribute
    gold = serializers.ChoiceField(choices=selectors.WHICH, default="include")
    paused = serializers.ChoiceField(
        choices=selectors.WHICH, default="exclude", help_text="Judgements by raters paused on the project."
    )
    eval = serializers.ChoiceField(
        choices=selectors.WHICH,
        default="exclude",
        help_text="Eval prompts, with their judgements and demonstrations: held out of training data by default.",
    )


def _selection(project: Project, query: dict) -> selectors.ExportFilter:
    return selectors.ExportFilter.for_project(
        project, since=query.get("since"), until=query.get("until"), raters=query.get("rater", ()),
        source=query.get("source"), gold=query.get("gold"), paused=query.get("paused"),
        eval=query.get("eval"),
    )  # fmt: skip


CONTENT_TYPES = {"jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet"}
FILE_RESPONSES = {(200, content_type): OpenApiTypes.BINARY for content_type in CONTENT_TYPES.values()}


class ExportApi(APIView):
    """GET (staff): download an export (``preference``, ``ranking``, ``sft``, ``hh``), streamed as it is read."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(
        parameters=[ExportQuery],
        responses={
            (200, CONTENT_TYPES["jsonl"]): OpenApiTypes.BINARY,
            (200, CONTENT_TYPES["parquet"]): OpenApiTypes.BINARY,
        },
    )
    def get(self, request: Request, slug: str, kind: str) -> HttpResponseBase:
        project = project_for_staff(request, slug)
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
            spool = exporters.export_spooled(kind, file_format, selection, conversational=options["conversational"])
            response = FileResponse(spool, content_type=CONTENT_TYPES["parquet"])
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class SnapshotOutput(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()
    created_by: "serializers.SlugRelatedField[User]" = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

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
        project = project_for_staff(self.request, self.kwargs["slug"])
        return DatasetSnapshot.objects.filter(project=project).order_by("-id")

    @extend_schema(request=SnapshotInput, responses={201: SnapshotOutput})
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_staff(request, slug)
        data = SnapshotInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        snapshot = services.dataset_snapshot_create(
            project=project,
            kind=options["kind"],
            file_format=options["format"],
            selection=_selection(project, options),
            conversational=options["conversational"],
            created_by=permissions.signed_in(request.user),
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

    @extend_schema(
        responses={
            (200, CONTENT_TYPES["jsonl"]): OpenApiTypes.BINARY,
            (200, CONTENT_TYPES["parquet"]): OpenApiTypes.BINARY,
        }
    )
    def get(self, request: Request, snapshot_id: int) -> HttpResponseBase:
        snapshot = get_object_or_404(DatasetSnapshot, pk=snapshot_id)
        try:
            return artefacts.file_response(
                snapshot.path, snapshot.sha256, filename=snapshot.path.rsplit("/", 1)[-1],
                content_type=CONTENT_TYPES[snapshot.file_format],
            )  # fmt: skip
        except artefacts.StoreError:
            raise NotFound(f"The file of snapshot {snapshot.pk} is missing from the artefact store.") from None
