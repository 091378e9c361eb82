"""Routing: where each open task stands in the project's task order, from its responses' reward-model scores.

``uncertainty`` puts first the tasks where the current reward model is least sure: the smallest score gap between
its two best responses. ``disagreement`` puts first the tasks where the last three reward models disagree most:
the largest spread, over those versions, of the probability the model gives one response beating another (a
Bradley-Terry model's sigmoid of the score difference, so that versions with different score scales compare),
the largest over the task's pairs. A task some version has not fully scored takes no part in that version's
figures; one with no figure (no scores, or fewer than two versions for ``disagreement``) keeps a null priority
and comes after the others, oldest first. ``fifo`` clears the priorities.
"""

import math
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.models import ComparisonTask, ModelVersion, Project, ResponseScore, TaskResponse

DISAGREEMENT_VERSIONS = 3
REFRESH_TASK = "labeling.tasks.model_in_loop_refresh_task"


def model_in_loop_refresh_later(*, project: Project) -> None:
    """Once the transaction commits, a worker scores the open tasks' responses with the reward models in the loop
    (a new current one, or the ones a new task order reads), or, with nothing to score, writes the task
    priorities again."""

    def send() -> None:
        from config.celery import app

        app.send_task(REFRESH_TASK, args=[project.pk], queue=settings.CELERY_TASK_DEFAULT_QUEUE)

    transaction.on_commit(send)


def routing_versions(*, project: Project) -> list[ModelVersion]:
    """The reward model versions the project's task order reads: the current one for ``uncertainty``, the newest
    three for ``disagreement`` (newest first); none for ``fifo``."""
    reward_models = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD)
    if project.task_order == Project.TaskOrder.UNCERTAINTY:
        return list(reward_models.filter(is_current=True))
    if project.task_order == Project.TaskOrder.DISAGREEMENT:
        return list(reward_models.order_by("-created_at", "-id")[:DISAGREEMENT_VERSIONS])
    return []


def _open_task_scores(*, project: Project, versions: list[ModelVersion]) -> dict[int, dict[int, list[float]]]:
    """task id -> version id -> the scores of the task's responses in position order, for the open tasks that
    version scored completely."""
    if not versions:
        return {}
    slots = TaskResponse.objects.filter(task__project=project, task__status=ComparisonTask.Status.OPEN)
    stored = ResponseScore.objects.filter(
        model_version__in=versions, response_id__in=slots.values("response_id")
    ).values_list("response_id", "model_version_id", "score")
    scores: dict[int, dict[int, float]] = defaultdict(dict)
    for response_id, version_id, score in stored.iterator(chunk_size=5000):
        scores[response_id][version_id] = score
    responses: dict[int, list[int]] = defaultdict(list)
    for task_id, response_id in slots.order_by("task_id", "position").values_list("task_id", "response_id"):
        responses[task_id].append(response_id)
    return {
        task_id: {
            version.pk: [scores[response_id][version.pk] for response_id in response_ids]
            for version in versions
            if all(version.pk in scores[response_id] for response_id in response_ids)
        }
        for task_id, response_ids in responses.items()
    }


def score_gap(scores: list[float]) -> float:
    """How far the best response's score lies above the second best's."""
    best, second = sorted(scores, reverse=True)[:2]
    return best - second


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(value, 50.0), -50.0)))


def preference_spread(scores_by_version: list[list[float]]) -> float:
    """Over the task's pairs of responses, the largest spread across versions of the probability that the first
    beats the second (each inner list: one version's scores of the task's responses, in position order)."""
    count = len(scores_by_version[0])
    spread = 0.0
    for first in range(count):
        for second in range(first + 1, count):
            chances = [_sigmoid(scores[first] - scores[second]) for scores in scores_by_version]
            spread = max(spread, max(chances) - min(chances))
    return spread


def task_priorities(*, project: Project) -> dict[int, float]:
    """task id -> priority (lower first) of the open tasks the project's task order can place."""
    versions = routing_versions(project=project)
    priorities = {}
    for task_id, by_version in _open_task_scores(project=project, versions=versions).items():
        scored = [by_version[version.pk] for version in versions if version.pk in by_version]
        if project.task_order == Project.TaskOrder.UNCERTAINTY and scored and len(scored[0]) >= 2:
            priorities[task_id] = score_gap(scored[0])
        elif project.task_order == Project.TaskOrder.DISAGREEMENT and len(scored) >= 2:
            priorities[task_id] = -preference_spread(scored)
    return priorities


REFRESH_BATCH = 1000


def task_priorities_refresh(*, project: Project) -> int:
    """Write the open tasks' priorities for the project's task order (null where it cannot place a task, and
    for every task under ``fifo``), ``REFRESH_BATCH`` tasks per transaction: a priority only orders the tasks,
    so a refresh cut short leaves nothing wrong, and raters' submits on those rows wait for one batch at most.
    Returns how many tasks changed."""
    priorities = task_priorities(project=project)
    current = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN).values_list(
        "pk", "priority"
    )
    changed = [
        ComparisonTask(pk=task_id, priority=priorities.get(task_id))
        for task_id, priority in current.iterator(chunk_size=5000)
        if priorities.get(task_id) != priority
    ]
    for start in range(0, len(changed), REFRESH_BATCH):
        with transaction.atomic():
            ComparisonTask.objects.bulk_update(changed[start : start + REFRESH_BATCH], ["priority"])
    if changed:  # raters' walks start again from the top
        Project.objects.filter(pk=project.pk).update(priorities_refreshed_at=timezone.now())
    return len(changed)
