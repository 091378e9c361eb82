"""A rater's day in a real browser: keyboard-only judging, demonstrations, hostile model output, and an
impatient double click. Each test checks what the database holds afterwards."""

import pytest

from labeling import services
from labeling.models import Demonstration, Judgement
from tests.factories import PASSWORD, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = pytest.mark.django_db(transaction=True)


def make_task(project, texts, prompt_text="Explain why the sky is blue."):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": prompt_text}])
    responses = [ResponseFactory(prompt=prompt, text=text) for text in texts]
    return services.comparison_task_create(project=project, prompt=prompt, responses=responses)


def shown_ids(page) -> list[int]:
    ids = page.locator("article.response").evaluate_all("(cards) => cards.map(card => card.dataset.id)")
    return [int(value) for value in ids]


def wait_for_task(page, count: int) -> list[int]:
    page.wait_for_function(f"document.querySelectorAll('article.response').length === {count}")
    page.wait_for_selector("#task:not([hidden])")
    return shown_ids(page)


def test_a_rater_compares_ranks_and_writes_a_demonstration_with_the_keyboard_only(session, rater):
    project = ProjectFactory(
        name="Keyboard project", members=[rater], overlap=1, rate_enabled=True, demonstrate_enabled=True
    )
    compare = make_task(project, ["Rayleigh scattering of sunlight.", "Because it reflects the ocean."])
    rank = make_task(
        project,
        ["Short answer.", "A **detailed** answer.", "An answer with `code`.", "A made-up answer."],
        prompt_text="Rank these.",
    )
    page = session.page
    session.log_in("rater", PASSWORD)
    session.shot("projects")
    calls: list[str] = []
    page.on("request", lambda request: calls.append(request.url))

    page.keyboard.press("Digit1")  # the first project's workbench
    a, b = wait_for_task(page, 2)
    assert {a, b} == set(compare.response_ids())
    assert page.inner_text("#step").startswith("Step 1 of 2")
    page.keyboard.press("Digit6")  # A: 6, the cursor moves on to B
    page.keyboard.press("Digit3")  # B: 3
    page.keyboard.press("Enter")  # on to the comparison
    page.keyboard.press("a")
    page.keyboard.press("Digit3")  # much better
    session.shot("compare")
    page.keyboard.press("Enter")

    ids = wait_for_task(page, 4)
    assert set(ids) == set(rank.response_ids())
    for score in ("5", "4", "3", "2"):
        page.keyboard.press(f"Digit{score}")
    page.keyboard.press("f")  # flags for the current (fourth) response
    page.keyboard.press("Digit2")  # hallucination
    page.keyboard.press("f")
    page.keyboard.press("Enter")
    page.keyboard.press("Digit3")
    page.keyboard.press("Digit1")
    page.keyboard.press("Shift+Digit4")  # tied with the one before
    page.keyboard.press("Digit2")
    page.keyboard.press("?")
    session.shot("rank-with-help")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    session.shot("done")
    # One call between tasks: each submission's answer brought the next task (the last: none left).
    api_calls = [url.split("/api/v1/", 1)[1] for url in calls if "/api/v1/" in url]
    assert api_calls == [
        f"projects/{project.slug}/tasks/next",
        f"tasks/{compare.pk}/judgements?next=true",
        f"tasks/{rank.pk}/judgements?next=true",
    ]

    judgements = {j.task_id: j for j in Judgement.objects.filter(rater=rater)}
    assert set(judgements) == {compare.pk, rank.pk}
    compared = judgements[compare.pk]
    assert (compared.ranking, compared.margin, compared.all_bad) == ([[a], [b]], 3.0, False)
    assert compared.likert == {str(a): 6, str(b): 3}
    assert compared.shown_order == [a, b]
    ranked = judgements[rank.pk]
    assert ranked.ranking == [[ids[2]], [ids[0], ids[3]], [ids[1]]]
    assert ranked.likert == {str(ids[0]): 5, str(ids[1]): 4, str(ids[2]): 3, str(ids[3]): 2}
    assert ranked.flags == {str(ids[3]): ["hallucination"]}
    assert ranked.shown_order == ids

    session.goto("/")
    page.keyboard.press("Shift+Digit1")  # the first project's demonstrations
    page.wait_for_selector("#task:not([hidden])")
    page.keyboard.type("Sunlight scatters off air molecules; blue light scatters most.")
    session.shot("demonstrate")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('1 written')")
    demonstration = Demonstration.objects.get(author=rater)
    assert demonstration.text == "Sunlight scatters off air molecules; blue light scatters most."
    assert session.errors == []


XSS_RESPONSE = """Here you go.

<script>window.__xss = 'script'; alert('script')</script>
<img src="x" onerror="window.__xss = 'img'; alert('img')">
<svg onload="window.__xss = 'svg'"></svg>
[click me](javascript:window.__xss='link';alert('link'))
<a href="javascript:alert('raw link')">raw link</a>
"""


def test_model_output_with_script_payloads_stays_inert(session, rater):
    project = ProjectFactory(members=[rater], guidelines="Be careful. <script>window.__xss='guidelines'</script>")
    make_task(project, [XSS_RESPONSE, "A plain **bold** answer."], prompt_text="<img src=x onerror=alert('prompt')>")
    page = session.page
    session.log_in("rater", PASSWORD)
    session.goto(f"/p/{project.slug}/")
    wait_for_task(page, 2)
    page.keyboard.press("g")  # guidelines
    page.keyboard.press("d")  # word diff
    for link in page.locator("#responses a").all():
        link.click()
    session.shot("xss")

    assert session.dialogs == []
    assert page.evaluate("window.__xss") is None
    assert page.locator("#workbench .md script, #responses img[onerror], #responses svg").count() == 0
    hrefs = page.locator("#workbench a").evaluate_all("(links) => links.map(l => l.getAttribute('href') || '')")
    assert not any(href.strip().lower().startswith("javascript") for href in hrefs)
    # The payload is still visible to the rater as text, so they can judge it.
    assert "<script>" in page.inner_text("#responses")
    assert page.locator("#responses strong").inner_text() == "bold"
    assert session.errors == []


def test_a_double_clicked_submit_stores_one_judgement(session, rater):
    project = ProjectFactory(members=[rater], overlap=1)
    task = make_task(project, ["First.", "Second."])
    page = session.page
    session.log_in("rater", PASSWORD)
    session.goto(f"/p/{project.slug}/")
    a, b = wait_for_task(page, 2)
    page.keyboard.press("b")
    page.dblclick("#submit")
    page.wait_for_selector("#done:not([hidden])")
    session.shot("after-double-click")
    assert list(Judgement.objects.values_list("task_id", "ranking")) == [(task.pk, [[b], [a]])]
