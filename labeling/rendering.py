"""Model output and guidelines as HTML that is safe to insert into a page.

Text is untrusted: Markdown is rendered with raw HTML turned off (so ``<script>`` shows as text), code
blocks are highlighted by Pygments, and the result passes through nh3 (the ammonia sanitiser), which keeps
only the tags, attributes and URL schemes listed here. ``javascript:`` links and event handlers never
survive either step. Images become links: a page never fetches an address that a response names, so
whoever wrote the response cannot learn who read it, or when.
"""

import hashlib
from functools import lru_cache
from html import escape
from importlib.metadata import version
from pathlib import Path

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p", "br", "hr", "blockquote", "pre", "code", "span", "div", "em", "strong", "del", "s", "sup", "sub",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "class"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "ol": {"start"},
    "th": {"class"},
    "td": {"class"},
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


def _image_as_link(renderer, tokens, index, options, env) -> str:
    """``![alt](url)`` as a link to the image, marked as one: never an image the page would fetch."""
    token = tokens[index]
    source = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env) or source
    return f'<a class="image-link" href="{escape(source)}">{escape("Image: " + alt)}</a>'


def _alignment_as_class(state) -> None:
    """A table column's alignment as a class (``align-right``) instead of a style attribute, which the page's
    Content-Security-Policy would refuse."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = str(token.attrGet("style") or "")
            if style.startswith("text-align:"):
                del token.attrs["style"]
                token.attrSet("class", f"align-{style.removeprefix('text-align:')}")


def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(["table", "strikethrough"])
    parser.add_render_rule("image", _image_as_link)
    parser.core.ruler.push("alignment_as_class", _alignment_as_class)
    return parser


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
    )


# HTML is stored beside the text it was rendered from (responses and prompts, at import), marked with a digest of
# that text, of this module's source and of the renderers' versions. HTML of a text edited since, rendered under
# other rules or by an older sanitiser is never served: the text is rendered again instead.
_RULES = Path(__file__).read_bytes() + repr([version(name) for name in ("markdown-it-py", "nh3", "pygments")]).encode()
_RULES_DIGEST = hashlib.sha256(_RULES).hexdigest()[:16]


def _mark(text: str) -> str:
    return f"<!--md:{_RULES_DIGEST}:{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}-->"


def html_for_storage(text: str) -> str:
    """The safe HTML of ``text``, marked with the text and the rules it was rendered under."""
    return _mark(text) + markdown_to_safe_html(text)


def html_from_storage(text: str, stored: str | None) -> str:
    """The stored HTML when it was rendered from this very text under today's rules, else ``text`` rendered now."""
    if stored:
        mark = _mark(text)
        if stored.startswith(mark):
            return stored[len(mark) :]
    return markdown_to_safe_html(text)


def messages_html_for_storage(messages: list[dict]) -> list[str]:
    """The stored HTML of each turn of a conversation."""
    return [html_for_storage(str(turn.get("content", ""))) for turn in messages]


def highlight_stylesheet() -> str:
    """CSS for the highlighted code classes."""
    return _FORMATTER.get_style_defs(".md pre")
