"""API routes, mounted under /api/v1/."""

from django.urls import path

from labeling import api

app_name = "api"

urlpatterns = [
    path("projects/<slug:slug>/tasks/next", api.TaskNextApi.as_view(), name="task-next"),
    path("tasks/<int:task_id>/judgements", api.JudgementSubmitApi.as_view(), name="judgement-submit"),
    path("tasks/<int:task_id>/skip", api.TaskSkipApi.as_view(), name="task-skip"),
    path("tasks/<int:task_id>/problems", api.TaskProblemReportApi.as_view(), name="task-problem-report"),
    path("projects/<slug:slug>/demonstrations/next", api.DemonstrationNextApi.as_view(), name="demonstration-next"),
    path("prompts/<int:prompt_id>/demonstrations", api.DemonstrationSubmitApi.as_view(), name="demonstration-submit"),
]
