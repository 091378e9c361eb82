"""Model output is untrusted: Markdown renders, HTML and script never do."""

from pathlib import Path

import pytest

from labeling import rendering
from labeling.rendering import highlight_stylesheet, markdown_to_safe_html

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, forbidden",
    [
        ("<script>alert(1)</script>", "<script"),
        ('<img src="x" onerror="alert(1)">', "<img"),
        ("[x](javascript:alert(1))", "href"),
        ("[x](JaVaScRiPt:alert(1))", "href"),
        ('<a href="javascript:alert(1)">x</a>', "<a"),
        ("![x](javascript:alert(1))", "<img"),
        ('<iframe src="https://example.org"></iframe>', "<iframe"),
        ("<style>body{display:none}</style>", "<style"),
        ('<div onclick="alert(1)">x</div>', "<div"),
    ],
)
def test_html_in_model_output_is_shown_as_text_never_run(text, forbidden):
    html = markdown_to_safe_html(text)
    assert forbidden not in html.lower()


def test_a_remote_image_becomes_a_link_so_that_no_page_fetches_it():
    html = markdown_to_safe_html('See ![a chart](https://evil.example/pixel.png "tracking") here.')
    assert "<img" not in html and "evil.example" in html
    assert (
        '<a class="image-link" href="https://evil.example/pixel.png" rel="noopener noreferrer nofollow">'
        "Image: a chart</a>"
    ) in html
    assert "<img" not in markdown_to_safe_html('<p><img src="https://evil.example/p.png"></p>')  # raw HTML: text


def test_markdown_renders_with_highlighted_code_and_safe_links():
    html = markdown_to_safe_html(
        "**bold** and [docs](https://example.org)\n\n"
        "```python\ndef f():\n    return 1\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |"
    )
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.org"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert '<span class="hl-k">def</span>' in html
    assert "<table>" in html and "<td>2</td>" in html


def test_code_in_an_unknown_language_is_escaped_as_is():
    html = markdown_to_safe_html("```nosuchlanguage\n<b>x</b>\n```")
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_the_shipped_highlight_stylesheet_matches_the_renderer():
    shipped = (ROOT / "frontend" / "static" / "frontend" / "highlight.css").read_text()
    assert highlight_stylesheet() in shipped


def test_stored_html_is_served_only_for_the_text_and_the_rules_it_was_rendered_under(monkeypatch):
    stored = rendering.html_for_storage("**bold**")
    assert rendering.html_from_storage("**bold**", stored) == markdown_to_safe_html("**bold**")
    # The text was edited after rendering: render the new text.
    assert rendering.html_from_storage("*new*", stored) == markdown_to_safe_html("*new*")
    # Unmarked HTML is never trusted.
    assert "<script" not in rendering.html_from_storage("x", "<script>alert(1)</script>")
    # Other rules (this module changed, or the sanitiser was upgraded): render again.
    marked_elsewhere = stored.replace("<strong>", "<strong class=old>")
    monkeypatch.setattr(rendering, "_RULES_DIGEST", "0" * 16)
    assert rendering.html_from_storage("**bold**", marked_elsewhere) == markdown_to_safe_html("**bold**")
