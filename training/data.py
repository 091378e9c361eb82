"""Records the trainer reads: the labelling app's exports, as JSONL or Parquet files.

- ``ranking``: one judgement per record, ``{"prompt", "responses", "ranking": [[position, ...], ...],
  "margin", "probability", "source", ...}``, ``ranking`` grouping positions in ``responses`` best first.
- ``preference`` (TRL's format): ``{"prompt", "chosen", "rejected"[, "margin"]}``, read as K = 2.
- ``sft``: ``{"prompt", "completion"}`` or ``{"messages"}``, read as reference replies for normalisation.

Prompts and replies may be text or lists of ``{role, content}`` messages.
"""

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.text import prompt_text


class DataError(ValueError):
    """A record the trainer cannot use; the message names the file and the record."""


@dataclass(frozen=True)
class RankedPrompt:
    """One judgement: a prompt, its K responses and their ranking (groups of positions, best first)."""

    prompt: list[dict[str, str]]
    responses: list[str]
    ranking: list[list[int]]
    margin: float | None = None
    probability: float | None = None
    source: str = "human"
    weight: float = 1.0  # the record's own weight (the rater's trust), times its source's in the loss
    judgement_id: int | None = None  # the judgement a ranking export made the record from

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) positions over every two groups; responses in one group are tied: no pair."""
        return [
            (winner, loser)
            for upper, group in enumerate(self.ranking)
            for lower_group in self.ranking[upper + 1 :]
            for winner in group
            for loser in lower_group
        ]


@dataclass(frozen=True)
class Reference:
    prompt: list[dict[str, str]]
    response: str


@dataclass
class Dataset:
    examples: list[RankedPrompt] = field(default_factory=list)

    def split(self, eval_fraction: float, seed: int) -> tuple[list[RankedPrompt], list[RankedPrompt]]:
        """Train and held-out examples, split by prompt: every judgement of one prompt lands on one side. A
        conversation falls on the same side whether a file gives it as messages or as the text the exports
        write ("User: ...\n\nAssistant: ..."), so that models trained on either kind of snapshot are compared
        on prompts neither saw."""
        keys = sorted({_split_key(example.prompt) for example in self.examples})
        random.Random(seed).shuffle(keys)
        held_out = set(keys[: round(len(keys) * eval_fraction)]) if eval_fraction > 0 else set()
        train: list[RankedPrompt] = []
        evaluation: list[RankedPrompt] = []
        for example in self.examples:
            (evaluation if _split_key(example.prompt) in held_out else train).append(example)
        return train, evaluation


def _split_key(prompt: list[dict[str, str]]) -> str:
    """The prompt as the one user message a text export makes of it (the key splits have always used)."""
    return json.dumps([{"role": "user", "content": prompt_text(prompt)}], sort_keys=True)


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
        return
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path.name}, line {number}: not JSON ({error.msg}).") from None


def as_messages(prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(turn, dict) for turn in prompt):
        return [{"role": turn["role"], "content": turn["content"]} for turn in prompt]
    raise DataError("a prompt must be text or a list of messages")


def as_text(reply) -> str:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, list):
        return "\n\n".join(turn["content"] for turn in reply if turn.get("role") == "assistant")
    raise DataError("a reply must be text or a list of messages")


def _weight(value) -> float:
    """A record's weight: a number of at least 0 (missing: 1)."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise DataError(f"weight must be a number of at least 0, not {value!r}")
    return float(value)


def read_rankings(path: str | Path) -> Dataset:
    """Judgements from a ``ranking`` or ``preference`` export."""
    path = Path(path)
    dataset = Dataset()
    for number, record in _records(path):
        try:
            if "responses" in record:
                responses = [as_text(response) for response in record["responses"]]
                ranking = [list(group) for group in record["ranking"]]
                positions = sorted(position for group in ranking for position in group)
                if positions != list(range(len(responses))):
                    raise DataError("the ranking must place every response once")
            elif "chosen" in record:
                responses = [as_text(record["chosen"]), as_text(record["rejected"])]
                ranking = [[0], [1]]
            else:
                raise DataError("expected a ranking or a preference record")
            example = RankedPrompt(
                prompt=as_messages(record["prompt"]),
                responses=responses,
                ranking=ranking,
                margin=record.get("margin"),
                probability=record.get("probability"),
                source=record.get("source") or "human",
                weight=_weight(record.get("weight")),
                judgement_id=record.get("judgement_id") if isinstance(record.get("judgement_id"), int) else None,
            )
        except (KeyError, TypeError, DataError) as error:
            raise DataError(f"{path.name}, record {number}: {error}") from None
        if len(responses) >= 2:
            dataset.examples.append(example)
    if not dataset.examples:
        raise DataError(f"{path.name} holds no rankings.")
    return dataset


def read_references(path: str | Path) -> list[Reference]:
    """Reference replies (an ``sft`` export) for normalising the scores."""
    path = Path(path)
    references = []
    for number, record in _records(path):
        try:
            if "messages" in record:
                *prompt, reply = record["messages"]
                references.append(Reference(as_messages(prompt), as_text([reply])))
            else:
                references.append(Reference(as_messages(record["prompt"]), as_text(record["completion"])))
        except (KeyError, ValueError, DataError) as error:
            raise DataError(f"{path.name}, record {number}: {error}") from None
    return references


def read_prompts(path: str | Path) -> list[list[dict[str, str]]]:
    """Distinct prompts, in file order, from any export with a ``prompt`` field (or ``messages``, whose last
    assistant turn is dropped)."""
    path = Path(path)
    prompts, seen = [], set()
    for number, record in _records(path):
        try:
            if "prompt" in record:
                prompt = prompt_messages(record)
            else:
                prompt = as_messages([turn for turn in record["messages"] if turn is not record["messages"][-1]])
        except (KeyError, TypeError, IndexError, DataError) as error:
            raise DataError(f"{path.name}, record {number}: {error}") from None
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path.name} holds no prompts.")
    return prompts


def prompt_messages(record: dict) -> list[dict[str, str]]:
    """The conversation of a ``prompts`` record: its ``messages`` when it carries them (the text in ``prompt``
    flattens a conversation into one turn), else its ``prompt``."""
    return as_messages(record["messages"] if record.get("messages") else record["prompt"])


def read_prompts_with_ids(path: str | Path) -> list[tuple[int, list[dict]]]:
    """``(prompt_id, messages)`` from a ``prompts`` export, in file order."""
    path = Path(path)
    prompts = []
    for number, record in _records(path):
        try:
            prompts.append((int(record["prompt_id"]), prompt_messages(record)))
        except (KeyError, TypeError, ValueError, DataError) as error:
            raise DataError(f"{path.name}, record {number}: {error}") from None
    if not prompts:
        raise DataError(f"{path.name} holds no prompts.")
    return prompts


def pick_prompts(prompts: list, count: int, seed: int) -> list:
    """``count`` of the prompts drawn at random (seeded), in their file order; all of them when ``count`` is 0
    or more than there are."""
    if count <= 0 or count >= len(prompts):
        return prompts
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), count))
    return [prompts[index] for index in chosen]


class DemonstrationBatches:
    """Random minibatches of demonstrations for PPO-ptx, tokenized with the policy's prompt format and labelled
    on the reply only."""

    def __init__(self, path: str | Path, tokenizer, config) -> None:  # config: a PPOConfig
        self.items = read_references(path)
        if not self.items:
            raise DataError(f"{Path(path).name} holds no demonstrations.")
        self.tokenizer, self.config = tokenizer, config

    def batch(self, device) -> dict:
        import torch

        from training.text import policy_prompt

        picks = [self.items[i] for i in torch.randint(len(self.items), (self.config.ptx_batch_size,)).tolist()]
        eos = self.tokenizer.eos_token or ""
        rows, labels = [], []
        for item in picks:
            prompt = self.tokenizer(policy_prompt(self.tokenizer, item.prompt), add_special_tokens=False)["input_ids"]
            reply = self.tokenizer(item.response + eos, add_special_tokens=False)["input_ids"]
            limit = self.config.max_prompt_length + self.config.max_new_tokens
            ids = (prompt + reply)[-limit:]
            rows.append(ids)
            labels.append(([-100] * len(prompt) + reply)[-limit:])
        width = max(len(ids) for ids in rows)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids in rows], device=device),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows], device=device),
            "labels": torch.tensor([row + [-100] * (width - len(row)) for row in labels], device=device),
        }
