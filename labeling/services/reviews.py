"""The review queue: completed tasks whose judgements disagree wait for a reviewer, who records the final
ranking (it becomes the task's consensus) or sends the task back for one more judgement."""

from collections import Counter
from datetime import datetime
from itertools import combinations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling import quality, validation
from labeling.errors import ApplicationError, Conflict, NotFound
from labeling.models import ComparisonTask, Judgement, Project, ReviewItem, User


def review_reason(rankings: list[list[list[int]]], agreement_min: float) -> str | None:
    """Why judgements (rankings of one task) need a reviewer, or None: no response is first in more than half
    of them, or, for a task of three or more responses, they agree on fewer than ``agreement_min`` of the
    response pairs (the mean, over every two judgements, of the share of pairs they order alike, a tie on one
    side counting half; two random rankings agree on about half). For two responses the first rule says it all:
    there the pairs' agreement follows from the split of the votes."""
    count = len(rankings)
    firsts = Counter(response for ranking in rankings for response in ranking[0])
    top, top_count = max(firsts.items(), key=lambda item: (item[1], -item[0]))
    if top_count * 2 <= count:
        return f"No majority for the top response: the one most often first was first in {top_count} of {count}."
    if sum(len(group) for group in rankings[0]) < 3:
        return None
    scores = [quality.gold_score(a, b) for a, b in combinations(rankings, 2)]
    known = [score for score in scores if score is not None]
    agreement = sum(known) / len(known) if known else 1.0
    if agreement < agreement_min:
        return (
            f"The {count} judgements agree on {agreement:.0%} of response pairs, under the project's "
            f"{agreement_min:.0%}."
        )
    return None


def review_queue_refresh(*, project: Project, now: datetime | None = None) -> int:
    """Put in the queue the tasks completed since the last scan whose judgements disagree (gold tasks aside:
    their answer is known); a task sent back and completed again returns to the queue if it still disagrees.
    Returns how many tasks were queued."""
    now = now or timezone.now()
    tasks = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.COMPLETE, is_gold=False)
    if project.review_scanned_at is not None:
        tasks = tasks.filter(updated_at__gte=project.review_scanned_at)
    rows = (
        Judgement.objects.filter(task__in=tasks, source=Judgement.Source.HUMAN)
        .order_by("task_id", "id")
        .values_list("task_id", "ranking")
        .iterator(chunk_size=5000)
    )
    queued = 0
    by_task: dict[int, list] = {}
    for task_id, ranking in rows:
        by_task.setdefault(task_id, []).append(ranking)
    decided = set(
        ReviewItem.objects.filter(task_id__in=list(by_task), status=ReviewItem.Status.DECIDED).values_list(
            "task_id", flat=True
        )
    )
    with transaction.atomic():
        for task_id, rankings in by_task.items():
            if len(rankings) < 2 or task_id in decided:
                continue
            reason = review_reason(rankings, project.review_agreement_min)
            if reason is None:
                continue
            ReviewItem.objects.update_or_create(
                task_id=task_id,
                defaults={"reason": reason, "status": ReviewItem.Status.OPEN, "decided_by": None, "decided_at": None},
            )
            queued += 1
        Project.objects.filter(pk=project.pk).update(review_scanned_at=now)
    project.review_scanned_at = now
    return queued


def _open_item(item_id: int, reviewer: User, projects) -> ReviewItem:
    item = ReviewItem.objects.select_for_update().select_related("task").filter(pk=item_id).first()
    if item is None or not projects.filter(pk=item.task.project_id).exists():
        raise NotFound(f"There is no review {item_id} open to you.")
    if item.status != ReviewItem.Status.OPEN:
        raise Conflict(f"This review was already closed ({item.get_status_display().lower()}).")
    return item


@transaction.atomic
def review_decide(*, item_id: int, reviewer: User, ranking, projects) -> ReviewItem:
    """The reviewer's final ranking of the task: from now on the task's consensus."""
    item = _open_item(item_id, reviewer, projects)
    try:
        validation.validate_ranking(ranking, item.task.response_ids())
    except ValidationError as error:
        raise ApplicationError(f"ranking: {error.messages[0]}", {"fields": {"ranking": error.messages}}) from None
    item.status, item.ranking = ReviewItem.Status.DECIDED, ranking
    item.decided_by, item.decided_at = reviewer, timezone.now()
    item.save(update_fields=["status", "ranking", "decided_by", "decided_at"])
    return item


@transaction.atomic
def review_send_back(*, item_id: int, reviewer: User, projects) -> ReviewItem:
    """Reopen the task for one more judgement; once it is complete again the scan looks at it afresh."""
    item = _open_item(item_id, reviewer, projects)
    task = ComparisonTask.objects.select_for_update().get(pk=item.task_id)
    task.required_judgements += 1
    task.status = ComparisonTask.Status.OPEN
    task.save(update_fields=["required_judgements", "status", "updated_at"])
    item.status, item.decided_by, item.decided_at = ReviewItem.Status.SENT_BACK, reviewer, timezone.now()
    item.save(update_fields=["status", "decided_by", "decided_at"])
    return item
