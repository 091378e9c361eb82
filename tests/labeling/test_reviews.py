"""The review queue: which tasks need a reviewer, what a reviewer sees and decides, who may do it, and how an
adjudicated ranking becomes the task's consensus."""

import json

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.test import APIClient

from labeling import services
from labeling.models import ComparisonTask, Judgement, ReviewItem
from labeling.permissions import REVIEWERS_GROUP
from tests.factories import ProjectFactory, UserFactory, task_create

pytestmark = pytest.mark.django_db


def test_a_task_needs_review_without_a_majority_for_its_top_or_with_low_agreement():
    assert services.review_reason([[[1], [2]], [[1], [2]], [[2], [1]]], 0.5) is None
    assert "No majority for the top response" in services.review_reason([[[1], [2]], [[2], [1]]], 0.5)
    # Everyone puts 1 first but the rest is ordered differently: the three pairs of judgements agree on 3, 5
    # and 4 of their 6 response pairs, 2/3 in all.
    rankings = [[[1], [2], [3], [4]], [[1], [4], [3], [2]], [[1], [3], [2], [4]]]
    assert services.review_reason(rankings, 0.6) is None
    assert "agree on 67% of response pairs, under the project's 70%" in services.review_reason(rankings, 0.7)


def judged_task(project, raters, rankings_of, *, gold=False):
    task = task_create(project=project, k=2, required_judgements=len(raters))
    a, b = task.response_ids()
    if gold:
        ComparisonTask.objects.filter(pk=task.pk).update(is_gold=True, gold_ranking=[[a], [b]])
    for number, (rater, ranking) in enumerate(zip(raters, rankings_of(a, b), strict=True)):
        Judgement.objects.create(task=task, rater=rater, ranking=ranking, client_submission_id=f"r{task.pk}-{number}")
    services.task_status_refresh(task=ComparisonTask.objects.get(pk=task.pk))
    return ComparisonTask.objects.get(pk=task.pk)


@pytest.fixture
def reviewer(project):
    user = UserFactory(username="reviewer", rater=True)
    user.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    project.members.add(user)
    return user


@pytest.fixture
def split(project, rater, other_rater):
    """A completed task its two raters split on, one they agree on, and a gold task they split on."""
    project.members.add(other_rater)
    raters = [rater, other_rater]
    disputed = judged_task(project, raters, lambda a, b: [[[a], [b]], [[b], [a]]])
    agreed = judged_task(project, raters, lambda a, b: [[[a], [b]], [[a], [b]]])
    judged_task(project, raters, lambda a, b: [[[a], [b]], [[b], [a]]], gold=True)
    return disputed, agreed


def test_the_scan_queues_disputed_completed_tasks_once_and_leaves_out_agreed_and_gold_ones(project, split):
    disputed, agreed = split
    assert services.review_queue_refresh(project=project) == 1
    item = ReviewItem.objects.get()
    assert item.task == disputed and item.status == "open" and "first in 1 of 2" in item.reason
    assert services.review_queue_refresh(project=project) == 0  # nothing completed since


def test_a_reviewer_sees_the_disputed_task_with_unnamed_judgements_and_decides_it(project, split, reviewer, staff_api):
    disputed, _ = split
    services.review_queue_refresh(project=project)
    client = APIClient()
    client.force_authenticate(reviewer)
    shown = client.get(f"/api/v1/projects/{project.slug}/reviews/next")
    assert shown.status_code == 200
    body = shown.json()
    assert body["task_id"] == disputed.pk and [j["rater"] for j in body["judgements"]] == ["rater 1", "rater 2"]
    assert "rater" not in json.dumps([j["rater"] for j in body["judgements"]]).replace("rater ", "")
    assert "other" not in json.dumps(body)  # no rater's name anywhere
    a, b = disputed.response_ids()

    url = f"/api/v1/reviews/{body['review_id']}/decision"
    refused = client.post(url, {"ranking": [[a]]}, format="json")
    assert refused.status_code == 400 and refused.json()["message"].startswith("ranking:")
    both = client.post(url, {"ranking": [[b], [a]], "send_back": True}, format="json")
    assert both.status_code == 400
    assert client.post(url, {"ranking": [[b], [a]]}, format="json").json() == {
        "review_id": body["review_id"], "status": "decided"
    }  # fmt: skip
    assert client.post(url, {"ranking": [[a], [b]]}, format="json").status_code == 409
    assert client.get(f"/api/v1/projects/{project.slug}/reviews/next").status_code == 204

    # The reviewer's ranking is the task's consensus.
    records = b"".join(staff_api.get(f"/api/v1/projects/{project.slug}/exports/consensus").streaming_content)
    consensus = {record["task_id"]: record for record in map(json.loads, records.splitlines())}
    assert consensus[disputed.pk]["method"] == "adjudicated" and consensus[disputed.pk]["ranking"] == [[1], [0]]
    assert {record["method"] for task_id, record in consensus.items() if task_id != disputed.pk} == {"ranked_pairs"}


def test_sending_a_task_back_reopens_it_for_one_more_judgement_and_a_majority_then_settles_it(project, split, reviewer):
    disputed, _ = split
    project.gold_first_tasks = 0  # the new rater below goes straight to the reopened task
    project.save()
    services.review_queue_refresh(project=project)
    item = ReviewItem.objects.get()
    services.review_send_back(item_id=item.pk, reviewer=reviewer, projects=project.__class__.objects.all())
    disputed.refresh_from_db()
    assert disputed.status == "open" and disputed.required_judgements == 3
    third = UserFactory(username="third", rater=True)
    project.members.add(third)
    lease = services.assignment_lease_next(project=project, rater=third)
    assert lease.task_id == disputed.pk
    a, b = disputed.response_ids()
    services.judgement_submit(rater=third, task_id=disputed.pk, client_submission_id="third", ranking=[[b], [a]])
    assert services.review_queue_refresh(project=project) == 0  # 2 of 3 now put b first: a majority
    assert ReviewItem.objects.get().status == "sent_back"


def test_who_may_review_what(client, project, split, reviewer, rater):
    services.review_queue_refresh(project=project)
    # A rater who is not a reviewer: no queue, no page.
    api = APIClient()
    api.force_authenticate(rater)
    assert api.get(f"/api/v1/projects/{project.slug}/reviews/next").status_code == 403
    item = ReviewItem.objects.get()
    assert api.post(f"/api/v1/reviews/{item.pk}/decision", {"send_back": True}, format="json").status_code == 403
    client.force_login(rater)
    assert client.get(reverse("frontend:adjudicate", args=[project.slug])).status_code == 403
    # A reviewer of another project sees nothing of this one.
    outsider = UserFactory(username="outsider", rater=True)
    outsider.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    ProjectFactory(members=[outsider])
    api.force_authenticate(outsider)
    assert api.get(f"/api/v1/projects/{project.slug}/reviews/next").status_code == 404
    assert api.post(f"/api/v1/reviews/{item.pk}/decision", {"send_back": True}, format="json").status_code == 404
    # A reviewer reaches neither the admin nor judgements outside the queue.
    client.force_login(reviewer)
    response = client.get("/admin/labeling/judgement/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.get(reverse("frontend:projects")).content.decode().count("Settle disagreements (1)") == 1
    api.force_authenticate(reviewer)
    listing = api.get(f"/api/v1/projects/{project.slug}/judgements")  # as a rater: their own, and they have none
    assert listing.status_code == 200 and listing.json()["count"] == 0
