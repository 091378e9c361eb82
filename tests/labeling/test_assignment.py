"""Handing out tasks: leases, overlap, gold tasks, and exact integrity under concurrent raters."""

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labeling import selectors, services
from labeling.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from labeling.models import Assignment, ComparisonTask, Judgement, TaskProblemReport
from tests.factories import ProjectFactory, UserFactory, task_create

pytestmark = pytest.mark.django_db


def judge(assignment, rater, **options):
    ranking = [[response_id] for response_id in assignment.shown_order]
    return services.judgement_submit(
        rater=rater,
        task_id=assignment.task_id,
        client_submission_id=f"{rater.pk}-{assignment.task_id}",
        ranking=ranking,
        **options,
    )


def test_a_rater_gets_the_same_lease_back_until_they_finish_it(project, rater, make_task):
    first, second = make_task(k=2), make_task(k=3)
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task == first
    assert services.assignment_lease_next(project=project, rater=rater).pk == lease.pk
    judge(lease, rater)
    assert services.assignment_lease_next(project=project, rater=rater).task == second


def test_a_task_is_handed_to_as_many_raters_as_its_overlap_and_never_twice_to_one(project, make_task):
    task = make_task(k=2, required_judgements=2)
    raters = UserFactory.create_batch(3, rater=True)
    project.members.add(*raters)
    first = services.assignment_lease_next(project=project, rater=raters[0])
    second = services.assignment_lease_next(project=project, rater=raters[1])
    assert first.task == second.task == task
    assert services.assignment_lease_next(project=project, rater=raters[2]) is None
    judge(first, raters[0])
    assert services.assignment_lease_next(project=project, rater=raters[0]) is None


def test_an_abandoned_lease_returns_the_task_to_the_pool(project, make_task):
    task = make_task(k=2, required_judgements=1)
    slow, quick = UserFactory.create_batch(2, rater=True)
    now = timezone.now()
    abandoned = services.assignment_lease_next(project=project, rater=slow, now=now)
    assert services.assignment_lease_next(project=project, rater=quick, now=now) is None

    later = now + project.lease_timeout + timedelta(seconds=1)
    taken = services.assignment_lease_next(project=project, rater=quick, now=later)
    assert taken.task == task
    with pytest.raises(Conflict, match="ran out and another rater took it"):
        judge(abandoned, slow, now=later)
    judge(taken, quick, now=later)
    assert list(task.judgements.values_list("rater", flat=True)) == [quick.pk]


def test_a_late_submit_counts_when_nobody_took_the_slot(project, rater, make_task):
    make_task(k=2, required_judgements=1)
    now = timezone.now()
    lease = services.assignment_lease_next(project=project, rater=rater, now=now)
    judgement, created = judge(lease, rater, now=now + timedelta(hours=3))
    assert created and judgement.seconds_spent == pytest.approx(3 * 3600)


def test_time_spent_is_measured_on_the_server_from_lease_to_submit(project, rater, make_task):
    make_task(k=2)
    now = timezone.now()
    lease = services.assignment_lease_next(project=project, rater=rater, now=now)
    judgement, _ = judge(lease, rater, now=now + timedelta(seconds=42.5))
    assert judgement.seconds_spent == pytest.approx(42.5)


def test_the_response_order_is_shuffled_per_rater_and_kept_with_the_judgement(project, make_task):
    tasks = [make_task(k=4, required_judgements=2) for _ in range(30)]
    first, second = UserFactory.create_batch(2, rater=True)
    orders = {first: [], second: []}
    for rater in (first, second):
        while (lease := services.assignment_lease_next(project=project, rater=rater)) is not None:
            assert sorted(lease.shown_order) == sorted(lease.task.response_ids())
            orders[rater].append(lease.shown_order)
            judgement, _ = judge(lease, rater)
            assert judgement.shown_order == lease.shown_order
    assert len(orders[first]) == len(orders[second]) == len(tasks)
    stored_order = [task.response_ids() for task in tasks]
    assert orders[first] != stored_order and orders[first] != orders[second]


@pytest.mark.parametrize("gold_rate, expected_gold", [(1.0, True), (0.0, False)])
def test_gold_tasks_are_mixed_in_at_the_projects_rate(project, rater, gold_rate, expected_gold):
    project.gold_rate = gold_rate
    project.gold_first_tasks = 0  # the rate alone (a new rater's first tasks are gold: tests/labeling/test_quality.py)
    project.save()
    plain = task_create(project=project, k=2)
    gold = task_create(project=project, k=2, gold_ranking=None)
    gold_ids = gold.response_ids()
    ComparisonTask.objects.filter(pk=gold.pk).update(is_gold=True, gold_ranking=[[gold_ids[0]], [gold_ids[1]]])
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task_id == (gold.pk if expected_gold else plain.pk)
    # With only the other kind left, the rater still gets work.
    judge(lease, rater)
    assert services.assignment_lease_next(project=project, rater=rater).task_id == (
        plain.pk if expected_gold else gold.pk
    )


def test_a_rater_only_gets_tasks_of_the_project_asked_for(rater, make_task):
    other = ProjectFactory(members=[rater])
    task_create(project=other, k=2)
    project_task = make_task(k=2)
    assert services.assignment_lease_next(project=project_task.project, rater=rater).task == project_task


def test_skipping_needs_a_reason_and_frees_the_slot_for_someone_else(project, make_task):
    make_task(k=2, required_judgements=1)
    skipper, other = UserFactory.create_batch(2, rater=True)
    lease = services.assignment_lease_next(project=project, rater=skipper)
    with pytest.raises(ApplicationError, match="Say why"):
        services.assignment_skip(rater=skipper, task_id=lease.task_id, reason="  ")
    services.assignment_skip(rater=skipper, task_id=lease.task_id, reason="I cannot judge medical advice.")
    lease.refresh_from_db()
    assert (lease.state, lease.skip_reason) == ("skipped", "I cannot judge medical advice.")
    assert services.assignment_lease_next(project=project, rater=skipper) is None
    assert services.assignment_lease_next(project=project, rater=other).task_id == lease.task_id


def test_a_stored_judgement_reads_back_exactly_as_submitted(project, rater, make_task):
    project.rate_enabled = True
    project.save()
    make_task(k=3)
    now = timezone.now()
    lease = services.assignment_lease_next(project=project, rater=rater, now=now)
    first, second, third = lease.shown_order
    judgement, created = services.judgement_submit(
        rater=rater,
        task_id=lease.task_id,
        client_submission_id="read-back",
        ranking=[[second], [first, third]],
        likert={str(first): 2, str(second): 7, str(third): 2},
        flags={str(first): ["hallucination"]},
        rationale="B cites its source; A and C \u00e9chouent.",
        now=now + timedelta(seconds=5),
    )
    stored = Judgement.objects.get(pk=judgement.pk)
    assert created
    assert (stored.task_id, stored.rater_id, stored.source, stored.client_submission_id) == (
        lease.task_id, rater.pk, "human", "read-back",
    )  # fmt: skip
    assert stored.ranking == [[second], [first, third]]
    assert stored.likert == {str(first): 2, str(second): 7, str(third): 2}
    assert stored.flags == {str(first): ["hallucination"]}
    assert stored.rationale == "B cites its source; A and C \u00e9chouent."
    assert (stored.shown_order, stored.seconds_spent) == (lease.shown_order, 5.0)
    assert (stored.margin, stored.all_bad) == (None, False)
    assert stored.created_at == judgement.created_at
    lease.refresh_from_db()
    assert lease.state == "submitted"


def test_a_submission_on_a_skipped_or_closed_task_is_refused_and_stores_nothing(project, make_task):
    skipped_task, closed_task = make_task(k=2), make_task(k=2)
    skipper, rater = UserFactory.create_batch(2, rater=True)
    lease = services.assignment_lease_next(project=project, rater=skipper)
    assert lease.task == skipped_task
    services.assignment_skip(rater=skipper, task_id=lease.task_id, reason="Not my language.")
    with pytest.raises(Conflict, match="You skipped this task"):
        judge(lease, skipper)

    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task == skipped_task
    judge(lease, rater)
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task == closed_task
    ComparisonTask.objects.filter(pk=closed_task.pk).update(status=ComparisonTask.Status.ARCHIVED)
    with pytest.raises(Conflict, match="This task is closed"):
        judge(lease, rater)
    assert Judgement.objects.count() == 1


def test_a_retry_returns_the_stored_judgement_and_a_second_judgement_of_a_task_is_refused(project, rater, make_task):
    make_task(k=2)
    make_task(k=2)
    lease = services.assignment_lease_next(project=project, rater=rater)
    judgement, created = judge(lease, rater)
    again, created_again = judge(lease, rater)
    assert (created, created_again, again.pk) == (True, False, judgement.pk)
    with pytest.raises(Conflict, match="already judged this task"):
        services.judgement_submit(
            rater=rater,
            task_id=lease.task_id,
            client_submission_id="another-id",
            ranking=[[i] for i in lease.shown_order],
        )
    following = services.assignment_lease_next(project=project, rater=rater)
    with pytest.raises(Conflict, match="already used for another task"):
        services.judgement_submit(
            rater=rater,
            task_id=following.task_id,
            client_submission_id=judgement.client_submission_id,
            ranking=[[i] for i in following.shown_order],
        )
    assert Judgement.objects.count() == 1


def test_a_submission_on_a_task_the_rater_never_held_is_not_found(project, rater, make_task):
    task = make_task(k=2)
    with pytest.raises(NotFound, match=f"You hold no task {task.pk}"):
        services.judgement_submit(
            rater=rater, task_id=task.pk, client_submission_id="x", ranking=[[i] for i in task.response_ids()]
        )


def test_ai_feedback_labels_do_not_fill_a_tasks_slots(project, rater, make_task):
    task = make_task(k=2, required_judgements=1)
    first, second = task.response_ids()
    services.judgement_create(
        task=task, ranking=[[first], [second]], source="ai", probability=0.8, origin="feedback-model",
        client_submission_id="ai-1",
    )  # fmt: skip
    task.refresh_from_db()
    assert task.status == "open"
    lease = services.assignment_lease_next(project=project, rater=rater)
    assert lease.task == task
    judge(lease, rater)
    task.refresh_from_db()
    assert task.status == "complete"
    assert task.judgements.filter(source="human").count() == 1 == task.judgements.filter(source="ai").count()


def test_reporting_a_problem_is_stored_and_moves_the_rater_on(project, rater, make_task):
    task = make_task(k=2)
    lease = services.assignment_lease_next(project=project, rater=rater)
    report = services.task_problem_report_create(rater=rater, task_id=lease.task_id, message="Response B is cut off.")
    assert (report.task, report.rater, report.message, report.outcome) == (
        task,
        rater,
        "Response B is cut off.",
        "open",
    )
    assert (report.closed_by, report.closed_at) == (None, None)
    lease.refresh_from_db()
    assert lease.state == "skipped" and "cut off" in lease.skip_reason


# --- Reported tasks are held back ----------------------------------------------------------------------------


def report(rater, task, message="Response B is cut off."):
    """``rater`` leases ``task`` (it must be their next task) and reports a problem with it."""
    lease = services.assignment_lease_next(project=task.project, rater=rater)
    assert lease.task_id == task.pk
    return services.task_problem_report_create(rater=rater, task_id=task.pk, message=message)


@pytest.fixture
def reported(project, rater, other_rater, make_task):
    """A task with two free slots that ``rater`` reported as broken, and a second task after it."""
    project.members.add(other_rater)
    broken, fine = make_task(k=2, required_judgements=2), make_task(k=2, required_judgements=2)
    report(rater, broken)
    return broken, fine


def test_a_reported_task_is_not_served_to_another_rater(project, rater, other_rater, reported):
    broken, fine = reported
    now = timezone.now()
    lease = services.assignment_lease_next(project=project, rater=other_rater)
    assert lease.task == fine
    judge(lease, other_rater)
    assert services.assignment_lease_next(project=project, rater=other_rater) is None
    assert not selectors.tasks_with_free_slots(project=project, rater=other_rater, now=now).exists()
    assert list(selectors.tasks_left_for_rater(user=other_rater)) == []
    # The reporter moves on as well.
    assert services.assignment_lease_next(project=project, rater=rater).task == fine


@pytest.mark.parametrize("close", ["task_problem_report_resolve", "task_problem_report_dismiss"])
def test_a_closed_report_returns_the_task_to_the_pool(project, rater, other_rater, staff, reported, close):
    broken, _ = reported
    other_rater_lease = services.assignment_lease_next(project=project, rater=other_rater)
    judge(other_rater_lease, other_rater)
    assert services.assignment_lease_next(project=project, rater=other_rater) is None

    closed = getattr(services, close)(report=TaskProblemReport.objects.get(), closed_by=staff)
    assert closed.outcome == ("resolved" if close.endswith("resolve") else "dismissed")
    assert closed.closed_by == staff and closed.closed_at is not None
    assert services.assignment_lease_next(project=project, rater=other_rater).task == broken
    # The reporter passed the task on and is not asked again.
    judge(services.assignment_lease_next(project=project, rater=rater), rater)
    assert services.assignment_lease_next(project=project, rater=rater) is None


def test_a_task_reported_twice_is_held_back_until_both_reports_are_closed(project, make_task, staff):
    broken = make_task(k=2, required_judgements=3)
    first, second, third = UserFactory.create_batch(3, rater=True)
    assert services.assignment_lease_next(project=project, rater=second).task == broken
    report(first, broken)
    # The rater who held the task before the first report reports it too.
    services.task_problem_report_create(rater=second, task_id=broken.pk, message="Both answers are in French.")
    reports = list(TaskProblemReport.objects.filter(task=broken).order_by("id"))
    assert [(item.rater, item.outcome) for item in reports] == [(first, "open"), (second, "open")]

    services.task_problem_report_resolve(report=reports[0], closed_by=staff)
    assert services.assignment_lease_next(project=project, rater=third) is None
    services.task_problem_report_dismiss(report=reports[1], closed_by=staff)
    assert services.assignment_lease_next(project=project, rater=third).task == broken


def test_a_lease_taken_before_the_report_is_not_handed_back_but_its_submission_is_accepted(
    project, rater, other_rater, make_task
):
    project.members.add(other_rater)
    broken, fine = make_task(k=2, required_judgements=2), make_task(k=2, required_judgements=2)
    held = services.assignment_lease_next(project=project, rater=other_rater)
    assert held.task == broken
    report(rater, broken)

    # Asking again moves the holder on to other work rather than back to the reported task...
    assert services.assignment_lease_next(project=project, rater=other_rater).task == fine
    # ...but what they already did on it is not lost.
    judgement, created = judge(held, other_rater)
    assert created and judgement.task == broken
    held.refresh_from_db()
    assert held.state == "submitted"


def test_a_live_lease_on_a_held_task_is_handed_back_once_the_report_is_closed(
    project, rater, other_rater, staff, make_task
):
    project.members.add(other_rater)
    broken = make_task(k=2, required_judgements=2)
    held = services.assignment_lease_next(project=project, rater=other_rater)
    report(rater, broken)
    assert services.assignment_lease_next(project=project, rater=other_rater) is None
    services.task_problem_report_resolve(report=TaskProblemReport.objects.get(), closed_by=staff)
    assert services.assignment_lease_next(project=project, rater=other_rater).pk == held.pk


def test_only_staff_resolve_or_dismiss_a_report_and_only_once(project, rater, other_rater, staff, reported):
    problem = TaskProblemReport.objects.get()
    for close in (services.task_problem_report_resolve, services.task_problem_report_dismiss):
        for someone in (rater, other_rater):
            with pytest.raises(PermissionDenied, match="Only administrators"):
                close(report=problem, closed_by=someone)
    problem.refresh_from_db()
    assert (problem.outcome, problem.closed_by, problem.closed_at) == ("open", None, None)

    services.task_problem_report_dismiss(report=problem, closed_by=staff)
    with pytest.raises(Conflict, match=f"Report {problem.pk} is already dismissed"):
        services.task_problem_report_resolve(report=problem, closed_by=staff)
    problem.refresh_from_db()
    assert problem.outcome == "dismissed"


def run_raters(project, raters, judgements_made: Counter, errors: list) -> None:
    """Each rater in its own thread: next task, submit, until nothing is left."""

    def work(rater):
        try:
            while (lease := services.assignment_lease_next(project=project, rater=rater)) is not None:
                judge(lease, rater)
                judgements_made[rater.pk] += 1
        except Exception as error:  # noqa: BLE001 (reported to the test below)
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(rater,)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a rater thread did not finish"


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_raters_fill_every_task_exactly_to_its_overlap():
    random.seed(7)
    raters = [UserFactory(rater=True) for _ in range(16)]
    project = ProjectFactory(members=raters, overlap=2)
    tasks = [task_create(project=project, k=random.randint(2, 4)) for _ in range(200)]

    judgements_made: Counter = Counter()
    errors: list = []
    run_raters(project, raters, judgements_made, errors)

    assert errors == []
    assert sum(judgements_made.values()) == Judgement.objects.count() == 400
    per_task = Counter(Judgement.objects.values_list("task_id", flat=True))
    assert set(per_task) == {task.pk for task in tasks}
    assert set(per_task.values()) == {2}
    pairs = list(Judgement.objects.values_list("task_id", "rater_id"))
    assert len(set(pairs)) == len(pairs), "a rater judged a task twice"
    assert not ComparisonTask.objects.filter(status="open").exists()
    assert Assignment.objects.filter(state="leased").count() == 0
    assert Assignment.objects.filter(state="submitted").count() == 400
