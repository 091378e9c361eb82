"""The API's JSON parser: DRF's, with the two inputs it lets through to a 500 answered as 400s that say what
is wrong: nesting deeper than any request of this API needs, and NUL characters, which no text column of
PostgreSQL can store."""

import io

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from labeling.validation import NUL_PROBLEM, nul_path

MAX_DEPTH = 32  # the deepest request of this API (a ranking of groups inside a body) is 3 levels


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item))
    return deepest


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise ParseError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).") from None
        # Both checks walk the value only when the text could hold what they look for: a body with fewer
        # brackets than the limit cannot be nested past it, and JSON writes a NUL character as \u0000.
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
            raise ParseError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).")
        if b"\\u0000" in raw:
            where = nul_path(data)
            if where is not None:
                raise ParseError(f"Field '{where}' {NUL_PROBLEM}")
        return data
