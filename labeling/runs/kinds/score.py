"""Score runs: a reward model scores responses, each stored once per response and model version. ``compared``
scores the answers the leaderboards compare (those in tasks that mix origins), so that the reward model can judge
the versions; ``open`` scores the responses of the open tasks. A run scores only what that version has not
scored yet, so running it again writes nothing new."""

import json
from datetime import timedelta
from pathlib import Path

from django import forms
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from labeling.errors import ApplicationError, Conflict
from labeling.models import (
    ComparisonTask,
    ModelVersion,
    Project,
    Response,
    ResponseScore,
    TaskResponse,
    TrainingRun,
    User,
)
from labeling.runs.forms import ModelVersionChoiceField, RunForm
from labeling.runs.outcomes import run_succeeded
from labeling.runs.spec import RunPage, RunSpec
from labeling.runs.starting import own_model, run_create
from labeling.services.routing import routing_versions, task_priorities_refresh
from training.config import ScoreConfig
from training.runtime import SCORES_FILE

TO_SCORE_FILE = "to_score.jsonl"
SCOPES = ("compared", "open")
# The model in the loop scores open tasks' responses this many at a time: a run that dies loses one batch, and
# the next run goes on from the scores stored.
OPEN_BATCH = 5000
RETRY_AFTER = timedelta(minutes=10)


def responses_to_score(*, project: Project, version: ModelVersion, scope: str) -> QuerySet[Response]:
    """The project's responses in ``scope`` that ``version`` has not scored yet."""
    tasks = ComparisonTask.objects.filter(project=project)
    if scope == "open":
        tasks = tasks.filter(status=ComparisonTask.Status.OPEN)
    else:
        tasks = tasks.annotate(origins=Count("responses__origin", distinct=True)).filter(origins__gt=1)
    in_scope = TaskResponse.objects.filter(task__in=tasks.values("pk")).values("response_id")
    return Response.objects.filter(pk__in=in_scope).exclude(scores__model_version=version).order_by("id")


@transaction.atomic
def scoring_run_start(
    *,
    project: Project,
    reward_model: ModelVersion | None = None,
    scope: str = "compared",
    limit: int = 0,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue ``reward_model`` (default: the current one) scoring the responses in ``scope`` (``SCOPES``) that
    it has not scored yet (the first ``limit`` of them, oldest first, where it is set)."""
    reward_model = own_model(project, reward_model, ModelVersion.Kind.REWARD)
    if reward_model is None:
        raise ApplicationError("Scoring needs a reward model: train one, or make one current.")
    if scope not in SCOPES:
        raise ApplicationError(f"Score the {' or '.join(SCOPES)} responses, not '{scope}'.", {"field": "scope"})
    if not responses_to_score(project=project, version=reward_model, scope=scope).exists():
        raise ApplicationError(f"{reward_model.name} has scored every {scope} response already.")
    return run_create(
        project=project, kind=TrainingRun.Kind.SCORE, parent_model=reward_model, reward_model=reward_model,
        base_model=reward_model.name, created_by=created_by,
        config={"scope": scope, **({"limit": limit} if limit else {})},
    )  # fmt: skip


def model_in_loop_versions(*, project: Project) -> list[ModelVersion]:
    """The reward models that score the open tasks' responses: the current one (live agreement) and those the
    task order reads."""
    current = own_model(project, None, ModelVersion.Kind.REWARD)
    versions = [current] if current else []
    return versions + [version for version in routing_versions(project=project) if version not in versions]


def open_responses_scoring_next(*, project: Project, refresh: bool = False) -> TrainingRun | None:
    """Start scoring the next batch of open tasks' responses that a reward model in the loop has not scored.
    With nothing left to score, or a score run already under way, None; then, with ``refresh``, the task
    priorities are written again from the scores there are. Without ``refresh`` (the scheduled job), a version
    whose score run failed in the last ``RETRY_AFTER`` is left alone."""
    failed = TrainingRun.objects.filter(
        project=project, kind=TrainingRun.Kind.SCORE, status=TrainingRun.Status.FAILED,
        finished_at__gt=timezone.now() - RETRY_AFTER,
    )  # fmt: skip
    failed_lately = set(failed.values_list("parent_model_id", flat=True))
    for version in model_in_loop_versions(project=project):
        if version.pk in failed_lately and not refresh:
            continue  # the scheduled job waits a while before it tries a version that failed again
        if responses_to_score(project=project, version=version, scope="open").exists():
            try:
                return scoring_run_start(project=project, reward_model=version, scope="open", limit=OPEN_BATCH)
            except Conflict:
                break  # a score run is under way: it goes on from here when it ends
    if refresh:
        task_priorities_refresh(project=project)
    return None


def to_score_write(run: TrainingRun, out_dir: Path) -> None:
    """The responses the trainer scores, with their prompts."""
    version = run.parent_model
    if version is None:
        raise ApplicationError(f"Score run {run.pk} names no reward model.")
    scope = (run.config or {}).get("scope", "compared")
    rows = responses_to_score(project=run.project, version=version, scope=scope).values_list(
        "pk", "prompt__messages", "text"
    )
    limit = (run.config or {}).get("limit")
    if limit:
        rows = rows[:limit]
    with open(out_dir / TO_SCORE_FILE, "w", encoding="utf-8") as out:
        for response_id, messages, text in rows.iterator(chunk_size=2000):
            out.write(json.dumps({"response_id": response_id, "prompt": messages, "response": text}) + "\n")


def to_score_argument(run: TrainingRun, out_dir: Path) -> list[str]:
    return ["--responses", str(out_dir / TO_SCORE_FILE)]


class ScoreRunForm(RunForm):
    reward_model = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(), required=False, empty_label="The current reward model"
    )
    scope = forms.ChoiceField(
        choices=[("compared", "answers the leaderboards compare"), ("open", "responses of open tasks")],
        help_text="Only the responses this reward model has not scored yet.",
    )

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, project=project, **kwargs)
        self.limit("reward_model", ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD))


@transaction.atomic
def scores_register(run: TrainingRun, out_dir: Path, now) -> int:
    """The scores, stored once per response and model version (a score already there is kept)."""
    version = run.parent_model
    if version is None:
        raise ApplicationError(f"Score run {run.pk} names no reward model.")
    scores = []
    with open(out_dir / SCORES_FILE, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                scores.append(ResponseScore(response_id=record["response_id"], model_version=version,
                                            score=float(record["score"])))  # fmt: skip
    existing = set(Response.objects.filter(pk__in=[score.response_id for score in scores]).values_list("pk", flat=True))
    scores = [score for score in scores if score.response_id in existing]  # deleted since: left out
    stored = ResponseScore.objects.filter(model_version=version)
    before = stored.count()
    ResponseScore.objects.bulk_create(scores, ignore_conflicts=True, batch_size=2000)
    created = stored.count() - before
    run_succeeded(run, out_dir, now, {"scores_stored": created})
    if (run.config or {}).get("scope") == "open":
        # After the commit, so that the priorities are written a batch per transaction: a rater's submit never
        # waits on the whole refresh.
        transaction.on_commit(lambda: open_responses_scoring_next(project=run.project, refresh=True))
    return created


SPEC = RunSpec(
    kind=TrainingRun.Kind.SCORE,
    command="score",
    config=ScoreConfig,
    start=scoring_run_start,
    form=ScoreRunForm,
    page=RunPage(
        "score",
        "Score responses",
        "Start scoring",
        "score_responses",
        "Score responses with a reward model (the leaderboard's reward-model judge; the model in the loop)",
    ),  # fmt: skip
    options=("max_length", "batch_size"),
    arguments=to_score_argument,
    prepare=to_score_write,
    register=scores_register,
)
