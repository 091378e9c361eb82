"""End to end: a reviewer settles disputed tasks with the keyboard only, sees every judgement with the raters
unnamed, and sends one back; rater text with script payloads stays inert."""

import pytest
from django.contrib.auth.models import Group

from labeling import services
from labeling.models import ComparisonTask, Judgement, ReviewItem
from labeling.permissions import REVIEWERS_GROUP
from tests.factories import PASSWORD, ProjectFactory, UserFactory, task_create

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = "<script>window.__xss = 'rationale'</script><img src=x onerror=\"window.__xss='img'\">"


def disputed_task(project, raters, k):
    task = task_create(project=project, k=k, required_judgements=len(raters))
    ids = task.response_ids()
    rankings = [[[i] for i in ids], [[i] for i in reversed(ids)]]
    for number, (rater, ranking) in enumerate(zip(raters, rankings, strict=True)):
        Judgement.objects.create(
            task=task,
            rater=rater,
            ranking=ranking,
            rationale=f"Because. {PAYLOAD}",
            client_submission_id=f"d{task.pk}-{number}",
        )
    services.task_status_refresh(task=ComparisonTask.objects.get(pk=task.pk))
    return task


def test_a_reviewer_records_a_final_ranking_and_sends_a_task_back_with_the_keyboard(session):
    reviewer = UserFactory(username="reviewer", rater=True)
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWERS_GROUP)[0])
    first_rater, second_rater = UserFactory(username="alice", rater=True), UserFactory(username="bob", rater=True)
    project = ProjectFactory(members=[reviewer, first_rater, second_rater])
    ranked = disputed_task(project, [first_rater, second_rater], k=3)
    compared = disputed_task(project, [first_rater, second_rater], k=2)
    assert services.review_queue_refresh(project=project) == 2

    page = session.page
    session.log_in("reviewer", PASSWORD)
    session.goto("/")
    page.click("text=Settle disagreements (2)")
    page.wait_for_selector("#task:not([hidden])")
    judgements = page.inner_text("#judgements")
    assert "rater 1" in judgements and "rater 2" in judgements and "A > B > C" in judgements
    assert "alice" not in page.content() and "bob" not in page.content()
    assert "First in 1 of 2" in page.inner_text("#reason") or "first in 1 of 2" in page.inner_text("#reason")
    session.shot("review")

    page.keyboard.press("b")  # B first,
    page.keyboard.press("a")  # then A
    page.keyboard.press("Enter")  # not yet: C is not placed
    assert "Place every response" in page.inner_text("#dock-message")
    page.keyboard.press("Shift+KeyC")  # C tied with A
    assert page.inner_text("#ranking") == "B > A = C"
    page.keyboard.press("Backspace")
    page.keyboard.press("c")
    assert page.inner_text("#ranking") == "B > A > C"
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('1 settled')")
    a, b, c = ranked.response_ids()
    decided = ReviewItem.objects.get(task=ranked)
    assert decided.status == "decided" and decided.ranking == [[b], [a], [c]] and decided.decided_by == reviewer

    page.keyboard.press("s")  # the two-response task goes back for one more judgement
    page.wait_for_selector("#done:not([hidden])")
    session.shot("done")
    compared.refresh_from_db()
    assert ReviewItem.objects.get(task=compared).status == "sent_back"
    assert compared.status == "open" and compared.required_judgements == 3
    assert page.evaluate("window.__xss") is None
    assert not session.errors and not session.dialogs
