"""API routes, mounted under /api/v1/."""

from django.urls import path

from labeling import api

app_name = "api"

urlpatterns = [
    # Rating: the calls the rater pages make.
    path("projects/<slug:slug>/tasks/next", api.TaskNextApi.as_view(), name="task-next"),
    path("tasks/<int:task_id>/judgements", api.JudgementSubmitApi.as_view(), name="judgement-submit"),
    path("tasks/<int:task_id>/skip", api.TaskSkipApi.as_view(), name="task-skip"),
    path("tasks/<int:task_id>/problems", api.TaskProblemReportApi.as_view(), name="task-problem-report"),
    path("projects/<slug:slug>/demonstrations/next", api.DemonstrationNextApi.as_view(), name="demonstration-next"),
    path("prompts/<int:prompt_id>/demonstrations", api.DemonstrationSubmitApi.as_view(), name="demonstration-submit"),
    path("projects/<slug:slug>/critique-chains/next", api.CritiqueChainNextApi.as_view(), name="critique-chain-next"),
    path("critique-chains/<int:chain_id>/review", api.CritiqueChainReviewApi.as_view(), name="critique-chain-review"),
    # Projects and their content.
    path("projects", api.ProjectListApi.as_view(), name="projects"),
    path("projects/<slug:slug>", api.ProjectDetailApi.as_view(), name="project"),
    path("projects/<slug:slug>/prompts", api.PromptListApi.as_view(), name="prompts"),
    path("prompts/<int:prompt_id>/responses", api.ResponseListApi.as_view(), name="responses"),
    path("projects/<slug:slug>/tasks", api.TaskListApi.as_view(), name="tasks"),
    path("projects/<slug:slug>/judgements", api.JudgementListApi.as_view(), name="judgements"),
    path("projects/<slug:slug>/demonstrations", api.DemonstrationListApi.as_view(), name="demonstrations"),
    # Data in and out.
    path("projects/<slug:slug>/imports", api.ImportApi.as_view(), name="import"),
    path("projects/<slug:slug>/exports/<str:kind>", api.ExportApi.as_view(), name="export"),
    path("projects/<slug:slug>/snapshots", api.SnapshotListApi.as_view(), name="snapshots"),
    path("snapshots/<int:snapshot_id>", api.SnapshotDetailApi.as_view(), name="snapshot"),
    path("snapshots/<int:snapshot_id>/download", api.SnapshotDownloadApi.as_view(), name="snapshot-download"),
]
