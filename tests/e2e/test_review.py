"""End to end: a rater reviews the model's critique-and-revise chains with the keyboard only; model text with
script payloads stays inert."""

import pytest

from labeling import services
from labeling.models import CritiqueChain
from tests.factories import PASSWORD, ProjectFactory, PromptFactory

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = "<script>window.__xss = 'chain'; alert('chain')</script><img src=x onerror=\"window.__xss='img'\">"


def chain_for(project, number: int) -> CritiqueChain:
    constitution = services.constitution_default_ensure()
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {number}?"}])
    chain = CritiqueChain.objects.create(
        project=project, prompt=prompt, constitution=constitution, model_name="m",
        initial_response=f"First try {number}. {PAYLOAD}", final_revision=f"Revised answer {number}.",
    )  # fmt: skip
    chain.rounds.create(number=1, principle=constitution.principles.get(name="Honest"),
                        critique=f"Unsupported claim. {PAYLOAD}", revision=f"Revised answer {number}.")  # fmt: skip
    return chain


def test_a_rater_accepts_edits_and_rejects_revisions_with_the_keyboard(session, rater):
    project = ProjectFactory(members=[rater])
    first, second, third = (chain_for(project, number) for number in (1, 2, 3))
    page = session.page
    session.log_in("rater", PASSWORD)
    session.goto(f"/p/{project.slug}/review/")
    page.wait_for_selector("#task:not([hidden])")
    assert "Round 1: Honest" in page.inner_text("#rounds")
    session.shot("review")
    page.keyboard.press("Control+Enter")  # accept as it is
    page.wait_for_function("document.getElementById('status').textContent.startsWith('1 reviewed')")
    page.keyboard.press("Control+a")
    page.keyboard.type("A better answer, written by me.")
    page.keyboard.press("Control+Enter")  # accept the edit
    page.wait_for_function("document.getElementById('status').textContent.startsWith('2 reviewed')")
    page.keyboard.press("Alt+KeyR")  # reject
    page.wait_for_selector("#done:not([hidden])")
    session.shot("done")

    for chain in (first, second, third):
        chain.refresh_from_db()
    assert (first.review_status, first.demonstration.text) == ("accepted", "Revised answer 1.")
    assert (second.review_status, second.demonstration.text) == ("edited", "A better answer, written by me.")
    assert third.review_status == "rejected" and third.demonstration is None
    assert session.dialogs == [] and page.evaluate("window.__xss") is None and session.errors == []
