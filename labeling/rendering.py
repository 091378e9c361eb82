"""Model output and guidelines as HTML that is safe to insert into a page.

Text is untrusted: Markdown is rendered with raw HTML turned off (so ``<script>`` shows as text), code
blocks are highlighted by Pygments, and the result passes through nh3 (the ammonia sanitiser), which keeps
only the tags, attributes and URL schemes listed here. ``javascript:`` links and event handlers never
survive either step.
"""

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p", "br", "hr", "blockquote", "pre", "code", "span", "div", "em", "strong", "del", "s", "sup", "sub",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "img",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
URL_SCHEMES = {"http", "https", "mailto"}
_FORMATTER = HtmlFormatter(nowrap=True, classprefix="hl-")


def _highlight(code: str, language: str, attributes: str) -> str:
    """Pygments markup for a fenced code block with a known language; empty means "escape it as is"."""
    if not language:
        return ""
    try:
        lexer = get_lexer_by_name(language.strip().split()[0])
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(["table", "strikethrough"])


_MARKDOWN = _parser()


@lru_cache(maxsize=8192)
def markdown_to_safe_html(text: str) -> str:
    """Render Markdown to sanitised HTML. Cached: responses are rendered once per process."""
    html = _MARKDOWN.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )


def highlight_stylesheet() -> str:
    """CSS for the highlighted code classes."""
    return _FORMATTER.get_style_defs(".md pre")
