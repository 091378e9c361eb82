from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import services
from labeling.models import Assignment, ComparisonTask

pytestmark = pytest.mark.django_db


def test_a_task_becomes_complete_when_it_has_the_judgements_it_needs(make_task, rater, other_rater):
    task = make_task(k=3, required_judgements=2)
    ranking = [[response_id] for response_id in task.response_ids()]
    services.judgement_create(task=task, rater=rater, ranking=ranking, client_submission_id="a")
    task.refresh_from_db()
    assert task.status == ComparisonTask.Status.OPEN
    services.judgement_create(task=task, rater=other_rater, ranking=ranking, client_submission_id="b")
    task.refresh_from_db()
    assert task.status == ComparisonTask.Status.COMPLETE


def test_expiring_stale_leases_touches_only_leases_that_ran_out(make_task, rater, other_rater):
    now = timezone.now()
    stale = Assignment.objects.create(
        task=make_task(), rater=rater, leased_at=now - timedelta(minutes=20), expires_at=now - timedelta(minutes=10)
    )
    live = Assignment.objects.create(
        task=make_task(), rater=rater, leased_at=now, expires_at=now + timedelta(minutes=10)
    )
    done = Assignment.objects.create(
        task=make_task(),
        rater=other_rater,
        leased_at=now - timedelta(minutes=20),
        expires_at=now - timedelta(minutes=10),
        state=Assignment.State.SUBMITTED,
    )
    assert services.assignment_expire_stale(now=now) == 1
    states = {a.pk: a.state for a in Assignment.objects.all()}
    assert states == {stale.pk: "expired", live.pk: "leased", done.pk: "submitted"}
    assert services.assignment_expire_stale(now=now) == 0


def test_a_demo_account_keeps_its_password_unless_asked_to_reset(db):
    user = services.rater_ensure(username="r", password="first-password")
    assert user.groups.filter(name="raters").exists() and not user.is_staff
    services.rater_ensure(username="r", password="second-password")
    user.refresh_from_db()
    assert user.check_password("first-password")
    services.rater_ensure(username="r", password="second-password", reset_password=True)
    user.refresh_from_db()
    assert user.check_password("second-password")
