"""Readers for data formats that come in. They parse and check; services write.

So far: OpenAssistant's message-tree export (``*.trees.jsonl``), where sibling assistant replies carry a
human ``rank`` (0 = best), and plain prompt lists (one JSON string per line).
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from labeling.errors import ApplicationError

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class RankedReply:
    external_id: str
    text: str
    rank: int
    origin: str


@dataclass(frozen=True)
class RankedGroup:
    """A conversation ending with a user turn and two or more replies to it, ranked by people."""

    external_id: str
    messages: list[dict[str, str]]
    replies: list[RankedReply] = field(default_factory=list)

    def ranking_groups(self) -> list[list[RankedReply]]:
        """Replies grouped by rank, best first; replies with the same rank are tied."""
        by_rank: dict[int, list[RankedReply]] = {}
        for reply in self.replies:
            by_rank.setdefault(reply.rank, []).append(reply)
        return [by_rank[rank] for rank in sorted(by_rank)]


def _reply_origin(message: dict) -> str:
    if message.get("synthetic"):
        return message.get("model_name") or "synthetic"
    return "human"


def _walk(node: dict, path: list[dict[str, str]]) -> Iterator[RankedGroup]:
    turn = {"role": OASST_ROLES[node["role"]], "content": node["text"]}
    conversation = [*path, turn]
    replies = [reply for reply in node.get("replies", []) if not reply.get("deleted")]
    if node["role"] == "prompter":
        ranked = [reply for reply in replies if reply.get("role") == "assistant" and reply.get("rank") is not None]
        if len(ranked) >= 2:
            yield RankedGroup(
                external_id=node["message_id"],
                messages=conversation,
                replies=[
                    RankedReply(
                        external_id=reply["message_id"],
                        text=reply["text"],
                        rank=int(reply["rank"]),
                        origin=_reply_origin(reply),
                    )
                    for reply in ranked
                ],
            )
    for reply in replies:
        yield from _walk(reply, conversation)


def oasst_ranked_groups(lines: Iterable[str]) -> Iterator[RankedGroup]:
    """Every prompter message with at least two ranked, undeleted assistant replies, in file order."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tree = json.loads(line)
            root = tree["prompt"]
            yield from _walk(root, [])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ApplicationError(
                f"Line {line_number}: not an OpenAssistant message tree ({error}).", {"line": line_number}
            ) from error


def plain_prompts(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(line number, prompt)`` for a file holding one JSON string per line."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)
        except json.JSONDecodeError as error:
            raise ApplicationError(f"Line {line_number}: not JSON ({error}).", {"line": line_number}) from error
        if not isinstance(text, str) or not text.strip():
            raise ApplicationError(f"Line {line_number}: expected a non-empty JSON string.", {"line": line_number})
        yield line_number, text
