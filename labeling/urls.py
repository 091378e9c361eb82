"""API routes, mounted under /api/v1/."""

from django.urls import path

from labeling.api import artefacts, content, data, evaluation, model_in_loop, rating, reviews, runs

app_name = "api"

urlpatterns = [
    # Rating: the calls the rater pages make.
    path("projects/<slug:slug>/tasks/next", rating.TaskNextApi.as_view(), name="task-next"),
    path("tasks/<id:task_id>/judgements", rating.JudgementSubmitApi.as_view(), name="judgement-submit"),
    path("tasks/<id:task_id>/skip", rating.TaskSkipApi.as_view(), name="task-skip"),
    path("tasks/<id:task_id>/problems", rating.TaskProblemReportApi.as_view(), name="task-problem-report"),
    path("projects/<slug:slug>/demonstrations/next", rating.DemonstrationNextApi.as_view(), name="demonstration-next"),
    path("prompts/<id:prompt_id>/demonstrations", rating.DemonstrationSubmitApi.as_view(), name="demonstration-submit"),
    path(
        "projects/<slug:slug>/critique-chains/next", rating.CritiqueChainNextApi.as_view(), name="critique-chain-next"
    ),
    path("critique-chains/<id:chain_id>/review", rating.CritiqueChainReviewApi.as_view(), name="critique-chain-review"),
    # The review queue, for reviewers.
    path("projects/<slug:slug>/reviews/next", reviews.ReviewNextApi.as_view(), name="review-next"),
    path("reviews/<id:review_id>/decision", reviews.ReviewDecisionApi.as_view(), name="review-decision"),
    # Projects and their content.
    path("me", content.MeApi.as_view(), name="me"),
    path("projects", content.ProjectListApi.as_view(), name="projects"),
    path("projects/<slug:slug>", content.ProjectDetailApi.as_view(), name="project"),
    path("projects/<slug:slug>/prompts", content.PromptListApi.as_view(), name="prompts"),
    path("prompts/<id:prompt_id>/responses", content.ResponseListApi.as_view(), name="responses"),
    path("projects/<slug:slug>/tasks", content.TaskListApi.as_view(), name="tasks"),
    path("projects/<slug:slug>/judgements", content.JudgementListApi.as_view(), name="judgements"),
    path("projects/<slug:slug>/demonstrations", content.DemonstrationListApi.as_view(), name="demonstrations"),
    # Data in and out.
    path("projects/<slug:slug>/imports", data.ImportApi.as_view(), name="import"),
    path("imports/<id:import_id>", data.ImportDetailApi.as_view(), name="import-job"),
    path("projects/<slug:slug>/exports/<str:kind>", data.ExportApi.as_view(), name="export"),
    path("projects/<slug:slug>/snapshots", data.SnapshotListApi.as_view(), name="snapshots"),
    path("snapshots/<id:snapshot_id>", data.SnapshotDetailApi.as_view(), name="snapshot"),
    path("snapshots/<id:snapshot_id>/download", data.SnapshotDownloadApi.as_view(), name="snapshot-download"),
    # Training runs and model versions.
    path("projects/<slug:slug>/runs", runs.RunListApi.as_view(), name="runs"),
    path("runs/<id:run_id>", runs.RunDetailApi.as_view(), name="run"),
    path("runs/<id:run_id>/cancel", runs.RunCancelApi.as_view(), name="run-cancel"),
    path("projects/<slug:slug>/models", runs.ModelListApi.as_view(), name="models"),
    path("models/<id:model_id>", runs.ModelDetailApi.as_view(), name="model"),
    path("models/<id:model_id>/current", runs.ModelMakeCurrentApi.as_view(), name="model-make-current"),
    # Evaluation.
    path("models/<id:model_id>/files", artefacts.ModelFilesApi.as_view(), name="model-files"),
    path("models/<id:model_id>/files/<path:path>", artefacts.ModelFileDownloadApi.as_view(), name="model-file"),
    path("projects/<slug:slug>/eval-split", evaluation.EvalSplitApi.as_view(), name="eval-split"),
    path("projects/<slug:slug>/leaderboard", evaluation.LeaderboardApi.as_view(), name="leaderboard"),
    path("projects/<slug:slug>/evaluations", evaluation.EvaluationApi.as_view(), name="evaluations"),
    path("projects/<slug:slug>/reward-agreement", model_in_loop.RewardAgreementApi.as_view(), name="reward-agreement"),
]
