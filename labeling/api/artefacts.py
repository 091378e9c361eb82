"""Model versions' files (staff), served from the artefact store wherever the run that made them ran."""

from django.http import HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import artefacts, permissions
from labeling.errors import NotFound
from labeling.models import ModelVersion


class ModelFileOutput(serializers.Serializer):
    path = serializers.CharField(help_text="Relative to the model's folder.")
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    url = serializers.CharField(help_text="Where to download it.")


class ModelFilesOutput(serializers.Serializer):
    model = serializers.CharField()
    content_hash = serializers.CharField()
    files = ModelFileOutput(many=True)


def _manifest(version: ModelVersion) -> dict:
    try:
        return artefacts.store().manifest(version.artefact_path)
    except artefacts.StoreError:
        raise NotFound(
            f"The artefact store holds no finished copy of model {version.name} ({version.artefact_path})."
        ) from None


class ModelFilesApi(APIView):
    """GET (staff): the files of a model version, as its run stored them (size and sha256 of each), to load it
    with ``from_pretrained`` elsewhere."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(responses=ModelFilesOutput, operation_id="v1_models_files_list")
    def get(self, request: Request, model_id: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=model_id)
        files = [
            {**entry, "path": path, "url": f"/api/v1/models/{version.pk}/files/{path}"}
            for path, entry in sorted(_manifest(version)["files"].items())
        ]
        return Response({"model": version.name, "content_hash": version.content_hash, "files": files})


class ModelFileDownloadApi(APIView):
    """GET (staff): one file of a model version, streamed from the artefact store and checked against its
    sha256 on the way (a mismatch cuts the download short); ``X-Content-SHA256`` carries the hash."""

    permission_classes = [permissions.IsStaff]

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, operation_id="v1_models_file")
    def get(self, request: Request, model_id: int, path: str) -> HttpResponseBase:
        version = get_object_or_404(ModelVersion, pk=model_id)
        entry = _manifest(version)["files"].get(path)
        if entry is None:
            raise NotFound(f"Model {version.name} has no file {path}.")
        try:
            return artefacts.file_response(
                f"{version.artefact_path}/{path}", entry["sha256"], filename=path.rsplit("/", 1)[-1]
            )
        except artefacts.StoreError as error:
            raise NotFound(str(error)) from None
