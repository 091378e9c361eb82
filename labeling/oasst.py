"""OpenAssistant message trees (oasst1's ``*_tree.jsonl``): each prompter message with two or more ranked,
undeleted assistant replies is a group of replies ranked by people (``rank`` 0 is the best)."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from labeling.errors import RecordError

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


def oasst_tree_groups(tree: dict, line: int) -> list[RankedGroup]:
    try:
        return list(_walk(tree["prompt"], []))
    except (KeyError, TypeError) as error:
        raise RecordError(line, "prompt", f"not an OpenAssistant message tree (missing {error}).") from None


def oasst_ranked_groups(lines: Iterable[str]) -> Iterator[RankedGroup]:
    """Every prompter message with at least two ranked, undeleted assistant replies, in file order."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tree = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(line_number, None, f"not valid JSON ({error.msg}).") from None
        yield from oasst_tree_groups(tree, line_number)
