"""The workbench at a laptop's size (1280x720) and a phone's (390x844), measured in a real browser: messages
beside the control that needs attention, rating keys that act on a response the rater can see, chosen
buttons that look chosen, no sideways scrolling, guidelines that close and never cover a response, a word
diff that keeps its spaces, and a long six-response task whose ranking and Submit stay within reach.
Where a test submits, it checks what the database stores."""

import re

import pytest

from labeling import services
from labeling.models import Judgement
from tests.factories import PASSWORD, ProjectFactory, PromptFactory, ResponseFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize(
        "viewport",
        [
            pytest.param({"width": 1280, "height": 720}, id="1280x720"),
            pytest.param({"width": 390, "height": 844}, id="390x844"),
        ],
    ),
]

SENTENCES = (
    "The committee should research the history of the question before it commits to a plan, because the "
    "record shows that hasty decisions in this area were often reversed within a year. Each option has costs "
    "that only appear later, and a careful reader will want the numbers behind every claim."
)
WIDE = """A line of code that does not wrap:

```python
result = compute_the_answer(first_argument=1, second_argument=2, third_argument=3, fourth_argument=4, fifth=5)
```

A long address: https://example.org/a/very/long/path/that/goes/on/and/on/without/any/break/at/all/index.html

| column one | column two | column three | column four | column five | column six | column seven |
|---|---|---|---|---|---|---|
| somewhat long cell | another long cell | a third long cell | a fourth long cell | fifth cell | sixth | seventh |
"""

# What the page measures. `shown` counts the pixel rows of an element that are on screen and not covered by
# anything else (a sticky bar, a panel): what the rater can actually see of it.
SHOWN = """(element) => {
  const box = element.getBoundingClientRect();
  const x = Math.min(Math.max(box.left + box.width / 2, 0), innerWidth - 1);
  let shown = 0;
  for (let y = Math.max(box.top, 0) + 1; y < Math.min(box.bottom, innerHeight); y += 4) {
    const hit = document.elementFromPoint(x, y);
    if (hit && element.contains(hit)) shown += 4;
  }
  return shown;
}"""
LIVE = "(element) => (element.closest('[aria-live], [role=alert], [role=status]') || {}).outerHTML || ''"


def long_text(number: int, paragraphs: int) -> str:
    return "\n\n".join(f"Response {number}, part {part + 1}. {SENTENCES}" for part in range(paragraphs))


def make_task(project, texts, prompt_text="Which plan should the committee follow?"):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": prompt_text}])
    responses = [ResponseFactory(prompt=prompt, text=text) for text in texts]
    return services.comparison_task_create(project=project, prompt=prompt, responses=responses)


def open_task(session, project, count: int) -> list[int]:
    session.log_in("rater", PASSWORD)
    session.goto(f"/p/{project.slug}/")
    page = session.page
    page.wait_for_function(f"document.querySelectorAll('article.response').length === {count}")
    page.wait_for_selector("#task:not([hidden])")
    ids = page.locator("article.response").evaluate_all("(cards) => cards.map(card => card.dataset.id)")
    return [int(value) for value in ids]


def shown(locator) -> int:
    return locator.evaluate(SHOWN)


def box(locator) -> dict:
    return locator.bounding_box()


def on_screen(locator, at_least: int = 1) -> bool:
    """At least `at_least` rows of the element (or all of it, if it is smaller) are visible and uncovered."""
    height = box(locator)["height"]
    return shown(locator) >= min(at_least, height - 8)


def gap(first: dict, second: dict) -> float:
    """The distance between two boxes (0 when they touch or overlap)."""
    dx = max(0, max(first["x"], second["x"]) - min(first["x"] + first["width"], second["x"] + second["width"]))
    dy = max(0, max(first["y"], second["y"]) - min(first["y"] + first["height"], second["y"] + second["height"]))
    return (dx**2 + dy**2) ** 0.5


def overlaps(first: dict, second: dict) -> bool:
    return (
        first["x"] < second["x"] + second["width"]
        and second["x"] < first["x"] + first["width"]
        and first["y"] < second["y"] + second["height"]
        and second["y"] < first["y"] + first["height"]
    )


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def luminance(css_colour: str) -> float:
    red, green, blue = (int(value) / 255 for value in re.findall(r"[\d.]+", css_colour)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def background(locator) -> str:
    return locator.evaluate("(element) => getComputedStyle(element).backgroundColor")


def test_enter_without_a_verdict_says_so_beside_the_verdict_buttons(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1)
    task = make_task(project, [long_text(1, 12), long_text(2, 12)])
    page = session.page
    a, b = open_task(session, project, 2)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight * 0.6)")  # reading, far down
    page.keyboard.press("Enter")
    message = page.get_by_text("Choose A, B, tie or both bad.")
    message.wait_for()
    session.shot("no-verdict", full_page=False)

    assert on_screen(message, at_least=16), "the message is off screen or covered"
    assert gap(box(message), box(page.locator("[data-choice=b]"))) < 120, "the message is far from the verdicts"
    assert 'aria-live="assertive"' in message.evaluate(LIVE) or "alert" in message.evaluate(LIVE)

    page.keyboard.press("b")
    assert message.count() == 0 or message.inner_text() == ""  # answered, so the message goes
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    judgement = Judgement.objects.get(task=task, rater=rater)
    assert (judgement.ranking, judgement.margin, judgement.all_bad) == ([[b], [a]], None, False)
    assert session.errors == []


def test_rating_keys_score_a_response_the_rater_can_see(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1, rate_enabled=True)
    task = make_task(project, [long_text(number, 8) for number in range(1, 7)])
    page = session.page
    ids = open_task(session, project, 6)
    cards = page.locator("article.response")
    for index, score in enumerate((5, 4, 6, 2)):
        current = page.locator("article.response.current")
        assert current.get_attribute("data-id") == str(ids[index])
        assert on_screen(current, at_least=120), f"response {index + 1} is scored out of sight"
        page.keyboard.press(f"Digit{score}")
        card = cards.nth(index)
        assert card.locator(f"[data-score='{score}']").get_attribute("aria-pressed") == "true"
        assert on_screen(card, at_least=60), f"response {index + 1} left the screen as it was scored"
        assert on_screen(page.locator("article.response.current"), at_least=120)
    session.shot("rated-four", full_page=False)

    # The rater scrolls back to the top with the mouse: the keys now act on the first response, the one they see.
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function(
        "document.querySelector('article.response.current') === document.querySelector('article.response')"
    )
    page.keyboard.press("Digit3")
    assert cards.nth(0).locator("[data-score='3']").get_attribute("aria-pressed") == "true"
    assert on_screen(cards.nth(0), at_least=60)
    # K and J move from one response to the next, each brought into view.
    for key, index in (("k", 2), ("k", 3), ("k", 4), ("k", 5), ("j", 4)):
        page.keyboard.press(key)
        current = page.locator("article.response.current")
        assert current.get_attribute("data-id") == str(ids[index])
        assert on_screen(current, at_least=120), f"{key} moved to response {index + 1} out of sight"
    for index, score in ((4, 7), (5, 3)):
        page.keyboard.press(f"Digit{score}")
        assert cards.nth(index).locator(f"[data-score='{score}']").get_attribute("aria-pressed") == "true"
        assert on_screen(cards.nth(index), at_least=60)
    session.shot("rated-all", full_page=False)

    page.keyboard.press("Enter")  # on to the ranking
    for digit in (3, 1, 2, 6, 5, 4):
        page.keyboard.press(f"Digit{digit}")
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    judgement = Judgement.objects.get(task=task, rater=rater)
    scores = [3, 4, 6, 2, 7, 3]  # the first scored twice
    assert judgement.likert == {str(id_): score for id_, score in zip(ids, scores, strict=True)}
    assert judgement.ranking == [[ids[2]], [ids[0]], [ids[1]], [ids[5]], [ids[4]], [ids[3]]]
    assert session.errors == []


def test_enter_with_an_unscored_response_says_so_beside_its_scale(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1, rate_enabled=True)
    task = make_task(project, [long_text(number, 8) for number in range(1, 7)])
    page = session.page
    ids = open_task(session, project, 6)
    for key in ("Digit5", "Digit5", "k", "Digit4", "Digit4", "Digit4"):  # k passes over the third
        page.keyboard.press(key)
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("Enter")
    message = page.get_by_text("Score every response from 1 to 7 first.")
    message.wait_for()
    session.shot("unscored", full_page=False)

    third = page.locator("article.response").nth(2)
    assert page.locator("article.response.current").get_attribute("data-id") == str(ids[2])
    assert on_screen(message, at_least=16), "the message is off screen or covered"
    assert gap(box(message), box(third.locator("[data-score='4']"))) < 120, "the message is far from the scale"
    assert on_screen(third.locator("[data-score='4']"), at_least=16)
    assert 'aria-live="assertive"' in message.evaluate(LIVE) or "alert" in message.evaluate(LIVE)

    page.keyboard.press("Digit3")
    page.keyboard.press("Enter")  # on to the ranking
    for digit in range(1, 7):
        page.keyboard.press(f"Digit{digit}")
    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    judgement = Judgement.objects.get(task=task, rater=rater)
    assert judgement.likert == {str(id_): score for id_, score in zip(ids, [5, 5, 3, 4, 4, 4], strict=True)}
    assert judgement.ranking == [[id_] for id_ in ids]


def test_a_long_ranking_keeps_the_ranking_and_submit_in_reach(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1, rate_enabled=True)
    task = make_task(project, [long_text(number, 8) for number in range(1, 7)])
    page = session.page
    ids = open_task(session, project, 6)
    for score in (6, 5, 4, 3, 2, 1):
        page.keyboard.press(f"Digit{score}")
    page.keyboard.press("Enter")  # on to the ranking
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height > 4000, f"the task is not long enough to test this ({height} px)"

    for fraction in (0, 0.3, 0.6, 1):
        page.evaluate(f"window.scrollTo(0, document.documentElement.scrollHeight * {fraction})")
        session.shot(f"ranking-at-{int(fraction * 100)}", full_page=False)
        for selector in ("#submit", "#ranking", "#pool"):
            assert on_screen(page.locator(selector), at_least=24), f"{selector} out of reach at {fraction}"
        panel = box(page.locator("#rank-panel"))
        assert panel["height"] < viewport["height"] * 0.4, "the ranking panel hides most of the page"

    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight * 0.4)")
    for digit in (2, 1):
        page.keyboard.press(f"Digit{digit}")
    page.keyboard.press("Shift+Digit3")  # tied with the first
    page.keyboard.press("Enter")
    message = page.get_by_text("Place every response in the ranking first.")
    message.wait_for()
    session.shot("ranking-incomplete", full_page=False)
    assert on_screen(message, at_least=16), "the message is off screen or covered"
    assert gap(box(message), box(page.locator("#ranking"))) < 120, "the message is far from the ranking"
    assert 'aria-live="assertive"' in message.evaluate(LIVE) or "alert" in message.evaluate(LIVE)

    for digit in (6, 5, 4):
        page.keyboard.press(f"Digit{digit}")
    page.locator("#submit").click()
    page.wait_for_selector("#done:not([hidden])")
    judgement = Judgement.objects.get(task=task, rater=rater)
    assert judgement.ranking == [[ids[1]], [ids[0], ids[2]], [ids[5]], [ids[4]], [ids[3]]]
    assert judgement.likert == {str(id_): score for id_, score in zip(ids, [6, 5, 4, 3, 2, 1], strict=True)}
    assert session.errors == []


def test_chosen_buttons_are_pressed_and_look_it(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1, rate_enabled=True)
    task = make_task(project, ["Research first.", "Decide now."])
    page = session.page
    a, b = open_task(session, project, 2)
    page.keyboard.press("Digit6")
    page.keyboard.press("Digit3")
    first = page.locator("article.response").nth(0)
    chosen, other = first.locator("[data-score='6']"), first.locator("[data-score='5']")
    assert (chosen.get_attribute("aria-pressed"), other.get_attribute("aria-pressed")) == ("true", "false")
    assert luminance(background(chosen)) < luminance(background(other)) - 0.2, "the chosen score looks paler"

    page.keyboard.press("Enter")  # on to the comparison
    page.keyboard.press("b")
    page.keyboard.press("Digit2")
    session.shot("chosen", full_page=False)
    for pressed, unpressed in (("[data-choice=b]", "[data-choice=a]"), ("[data-strength='2']", "[data-strength='1']")):
        chosen, other = page.locator(pressed), page.locator(unpressed)
        assert (chosen.get_attribute("aria-pressed"), other.get_attribute("aria-pressed")) == ("true", "false")
        assert background(chosen) != background(other)
        assert luminance(background(chosen)) < luminance(background(other)) - 0.2, f"{pressed} looks undone"

    page.keyboard.press("Enter")
    page.wait_for_selector("#done:not([hidden])")
    judgement = Judgement.objects.get(task=task, rater=rater)
    assert (judgement.ranking, judgement.margin, judgement.likert) == ([[b], [a]], 2.0, {str(a): 6, str(b): 3})


def test_the_page_never_scrolls_sideways(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1, rate_enabled=True, guidelines=WIDE)
    compare = make_task(project, [WIDE, f"Short. {WIDE}"], prompt_text=WIDE)
    rank = make_task(project, [f"{number}. {WIDE}" for number in range(1, 7)], prompt_text=WIDE)
    page = session.page
    a, b = open_task(session, project, 2)
    assert no_sideways_scroll(page), "the comparison scrolls sideways"
    page.keyboard.press("d")
    page.keyboard.press("g")
    session.shot("compare-wide", full_page=False)
    assert no_sideways_scroll(page), "the comparison with the diff and guidelines open scrolls sideways"
    page.keyboard.press("g")
    page.keyboard.press("d")

    # Tap through it: every control must be reachable without scrolling sideways.
    for card, score in ((0, "4"), (1, "5")):
        page.locator("article.response").nth(card).locator(f"[data-score='{score}']").click()
    page.locator("#submit").click()
    page.locator("[data-choice=a]").click()
    page.locator("#submit").click()
    page.wait_for_function("document.querySelectorAll('article.response').length === 6")
    page.keyboard.press("?")
    session.shot("rank-wide-help", full_page=False)
    assert no_sideways_scroll(page), "the ranking with the key list open scrolls sideways"
    page.keyboard.press("Escape")
    for score in (1, 2, 3, 4, 5, 6):
        page.keyboard.press(f"Digit{score}")
    page.keyboard.press("Enter")
    session.shot("rank-wide", full_page=False)
    assert no_sideways_scroll(page), "the ranking scrolls sideways"

    judgement = Judgement.objects.get(task=compare, rater=rater)
    assert (judgement.ranking, judgement.likert) == ([[a], [b]], {str(a): 4, str(b): 5})
    assert not Judgement.objects.filter(task=rank).exists()
    assert session.errors == []


def test_the_guidelines_close_with_escape_or_their_button_and_cover_no_response(session, rater, viewport):
    guidelines = "# Rules\n\n" + "\n\n".join(f"Rule {number}. {SENTENCES}" for number in range(1, 9))
    project = ProjectFactory(members=[rater], overlap=1, guidelines=guidelines)
    make_task(project, [long_text(number, 3) for number in range(1, 5)])
    page = session.page
    open_task(session, project, 4)
    panel = page.locator("#guidelines")
    cards = page.locator("article.response")

    def covers_no_response(where: str) -> None:
        for index in range(cards.count()):
            assert not overlaps(box(panel), box(cards.nth(index))), f"the guidelines cover response {index + 1} {where}"

    page.keyboard.press("g")
    assert panel.is_visible()
    session.shot("guidelines", full_page=False)
    covers_no_response("at the top")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
    covers_no_response("half way down")
    close = panel.get_by_role("button", name=re.compile("close", re.IGNORECASE))
    assert close.count() == 1, "the guidelines have no close button"
    assert "Esc" in close.inner_text()
    page.keyboard.press("Escape")
    assert panel.is_hidden(), "Escape leaves the guidelines open"

    page.get_by_role("button", name=re.compile("^Guidelines")).click()
    assert panel.is_visible()
    covers_no_response("opened with the mouse")
    close.click()
    assert panel.is_hidden(), "the close button leaves the guidelines open"
    page.keyboard.press("g")
    page.keyboard.press("g")
    assert panel.is_hidden()
    assert session.errors == []


def test_the_word_diff_keeps_the_spaces_between_words(session, rater, viewport):
    project = ProjectFactory(members=[rater], overlap=1)
    make_task(
        project,
        ["We should research the options first.\nThen we decide.", "We should determine the options.\nThen we decide."],
    )
    page = session.page
    open_task(session, project, 2)
    page.keyboard.press("d")
    # Responses come in an order shuffled for each rater: compare the first text with the second.
    before = page.locator("article.response", has_text="research").get_attribute("data-id")
    after = page.locator("article.response", has_text="determine").get_attribute("data-id")
    page.select_option("#diff-left", before)
    page.select_option("#diff-right", after)
    body = page.locator("#diff-body")
    session.shot("diff", full_page=False)
    text = body.inner_text()
    assert "research determine" in text, text
    assert "We should research determine the options first. options.\nThen we decide." in text, text
    assert body.locator("del").all_inner_texts()[0].strip() == "research"
    assert body.locator("ins").all_inner_texts()[0].strip() == "determine"
    assert no_sideways_scroll(page)
