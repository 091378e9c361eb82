"""How judgements become model input: every (prompt, reply) tokenised once, before training, and truncated so
that the whole reply and the conversation's final turns are kept; batches of similar length, so that little of
a batch is padding.

Truncation: ``max_length`` tokens in all. The reply keeps up to all of them but a quarter (a long reply still
leaves the prompt its last quarter); the prompt keeps its last tokens in what is left, so the turn the reply
answers is always there and the start of a long conversation goes first.

A model is saved with its ``Reading`` (``reward_inputs`` in its config), so that scoring it later (PPO, a
baseline comparison) reads text the way it was trained to.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from training.data import RankedPrompt
from training.text import prompt_text, uses_chat_template

# --- text ----------------------------------------------------------------------------------------------------

Layout = Literal["joined", "pair"]
LAYOUTS: tuple[Layout, ...] = ("joined", "pair")


@dataclass(frozen=True)
class Reading:
    """How a reward model reads a (prompt, reply): how many tokens, how many of the prompt's last messages, and
    for an encoder whose tokenizer separates segments (BERT-like) the layout: ``joined`` (prompt, blank line,
    reply, one segment) or ``pair`` (prompt [SEP] reply, two segments). Tokenizers with a chat template always
    read the template."""

    max_length: int
    prompt_turns: int = 0
    layout: Layout = "joined"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout is one of {', '.join(LAYOUTS)}, not {self.layout!r}.")

    @classmethod
    def of(cls, config) -> "Reading":
        """A trainer config's reading (any object with ``max_length``, ``prompt_turns`` and ``layout``)."""
        return cls(config.max_length, config.prompt_turns, config.layout)

    @classmethod
    def saved_with(cls, model, max_length: int | None = None) -> "Reading":
        """The reading a model was saved with, ``max_length`` instead of its own when given. A model saved
        before readings were recorded was trained on the whole prompt, as a text pair where the tokenizer had
        segments."""
        saved = getattr(model.config, "reward_inputs", None) or {}
        return cls(
            max_length=int(max_length or saved.get("max_length") or 512),
            prompt_turns=int(saved.get("prompt_turns", 0)),
            layout=saved.get("layout", "pair"),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _layout(tokenizer: PreTrainedTokenizerBase, prompt: list[dict], reply: str, reading: Reading) -> tuple[str, str]:
    """The text the model reads, cut where the reply starts: the chat template if the tokenizer has one, a text
    pair for the ``pair`` layout on a tokenizer with segments, else prompt, blank line, reply and EOS."""
    if reading.prompt_turns > 0:
        prompt = prompt[-reading.prompt_turns :]
    if uses_chat_template(tokenizer):
        opened = str(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
        full = str(tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": reply}], tokenize=False))
        return (opened, full[len(opened) :]) if full.startswith(opened) else ("", full)
    if _reads_pair(tokenizer, reading):
        return prompt_text(prompt), reply
    return f"{prompt_text(prompt)}\n\n", f"{reply} {tokenizer.eos_token or ''}"


def _reads_pair(tokenizer: PreTrainedTokenizerBase, reading: Reading) -> bool:
    return reading.layout == "pair" and not uses_chat_template(tokenizer) and tokenizer.sep_token is not None


@dataclass(frozen=True)
class Row:
    """One response as the model reads it, unpadded."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def truncate(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[dict]],
    replies: Sequence[str],
    reading: Reading,
) -> list[tuple[str, str]]:
    """Each (prompt, reply) laid out as text and cut to fit ``max_length`` tokens with the special tokens (as
    the module says): what the model reads, before and after the point where the reply starts."""
    parts = [_layout(tokenizer, prompt, reply, reading) for prompt, reply in zip(prompts, replies, strict=True)]
    special = tokenizer.num_special_tokens_to_add(pair=_reads_pair(tokenizer, reading))
    budget = max(2, reading.max_length - special)
    spans = [
        tokenizer([part[side] for part in parts], add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        for side in (0, 1)
    ]
    cut = []
    for (prompt, reply), prompt_spans, reply_spans in zip(parts, spans[0], spans[1], strict=True):
        reply_tokens = min(len(reply_spans), budget - min(len(prompt_spans), budget // 4))
        prompt_tokens = min(len(prompt_spans), budget - reply_tokens)
        if reply_tokens < len(reply_spans):
            reply = reply[: reply_spans[reply_tokens - 1][1]] if reply_tokens > 0 else ""
        if prompt_tokens < len(prompt_spans):
            prompt = prompt[prompt_spans[len(prompt_spans) - prompt_tokens][0] :] if prompt_tokens > 0 else ""
        cut.append((prompt, reply))
    return cut


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[dict]],
    replies: Sequence[str],
    reading: Reading,
) -> list[Row]:
    """Each (prompt, reply) as one row of at most ``reading.max_length`` tokens (truncated as the module says)."""
    if not replies:
        return []
    pair, max_length = _reads_pair(tokenizer, reading), reading.max_length
    cut = truncate(tokenizer, prompts, replies, reading)
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # a cut that re-tokenised a little longer loses prompt, not reply
    try:
        if pair:
            encoded = tokenizer(
                [first for first, _ in cut], [second for _, second in cut], truncation="only_first",
                max_length=max_length,
            )  # fmt: skip
        else:
            encoded = tokenizer([first + second for first, second in cut], truncation=True, max_length=max_length)
    finally:
        tokenizer.truncation_side = side
    types = encoded.get("token_type_ids") if pair else None
    return [
        Row(list(ids), list(types[index]) if types is not None else None)
        for index, ids in enumerate(encoded["input_ids"])
    ]


def pad(rows: Sequence[Row], pad_token_id: int) -> dict[str, torch.Tensor]:
    """(N, T) right-padded inputs: ``input_ids``, ``attention_mask`` and ``token_type_ids`` when rows have them."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row.input_ids, dtype=torch.long)
        attention_mask[index, : len(row)] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if rows[0].token_type_ids is not None:
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            token_type_ids[index, : len(row)] = torch.tensor(row.token_type_ids, dtype=torch.long)
        inputs["token_type_ids"] = token_type_ids
    return inputs


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)


# --- judgements ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A judgement with its responses tokenised."""

    example: RankedPrompt
    rows: list[Row]

    @property
    def length(self) -> int:
        return max(len(row) for row in self.rows)


def tokenize_examples(
    examples: Sequence[RankedPrompt], tokenizer: PreTrainedTokenizerBase, reading: Reading
) -> list[Encoded]:
    """Every response of every judgement tokenised in one call."""
    prompts = [example.prompt for example in examples for _ in example.responses]
    replies = [response for example in examples for response in example.responses]
    rows = tokenize(tokenizer, prompts, replies, reading)
    encoded, start = [], 0
    for example in examples:
        encoded.append(Encoded(example, rows[start : start + len(example.responses)]))
        start += len(example.responses)
    return encoded


@dataclass
class Pairs:
    """The ranked pairs of B judgements whose N responses are numbered in order."""

    winner: torch.Tensor  # (P,) row of the better response
    loser: torch.Tensor  # (P,) row of the worse response
    prompt: torch.Tensor  # (P,) which of the B judgements the pair belongs to
    margin: torch.Tensor  # (P,) subtracted from the reward difference (0 when unknown or unused)
    rated_margin: torch.Tensor  # (P,) the rater's margin, NaN when none was given
    probability: torch.Tensor  # (P,) soft label; NaN for hard labels
    weight: torch.Tensor  # (B,) per-judgement weight: its source's times its own (the rater's trust)

    def to(self, device) -> "Pairs":
        return Pairs(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})


def pairs_of(examples: Sequence[RankedPrompt], use_margin: bool, source_weights: dict[str, float]) -> Pairs:
    winner, loser, prompt_index, margin, rated, probability = [], [], [], [], [], []
    offset = 0
    for index, example in enumerate(examples):
        for better, worse in example.pairs():
            winner.append(offset + better)
            loser.append(offset + worse)
            prompt_index.append(index)
            margin.append(example.margin if use_margin and example.margin is not None else 0.0)
            rated.append(example.margin if example.margin is not None else math.nan)
            probability.append(example.probability if example.probability is not None else math.nan)
        offset += len(example.responses)
    return Pairs(
        winner=torch.tensor(winner, dtype=torch.long),
        loser=torch.tensor(loser, dtype=torch.long),
        prompt=torch.tensor(prompt_index, dtype=torch.long),
        margin=torch.tensor(margin, dtype=torch.float32),
        rated_margin=torch.tensor(rated, dtype=torch.float32),
        probability=torch.tensor(probability, dtype=torch.float32),
        weight=torch.tensor(
            [source_weights.get(example.source, 1.0) * example.weight for example in examples], dtype=torch.float32
        ),
    )


@dataclass
class Batch:
    """B judgements flattened: N responses (one row each) and their ranked pairs."""

    inputs: dict[str, torch.Tensor]  # (N, T)
    pairs: Pairs

    def to(self, device) -> "Batch":
        return Batch({key: value.to(device) for key, value in self.inputs.items()}, self.pairs.to(device))


def collate(
    encoded: Sequence[Encoded], tokenizer: PreTrainedTokenizerBase, use_margin: bool, source_weights: dict
) -> Batch:
    return Batch(
        inputs=pad([row for item in encoded for row in item.rows], pad_id(tokenizer)),
        pairs=pairs_of([item.example for item in encoded], use_margin, source_weights),
    )


# --- batches of similar length -------------------------------------------------------------------------------


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of indices, each index once per pass: shuffled, then each window of ``window`` batches' worth
    sorted by length and cut into batches, then the batches shuffled. Batches hold judgements of similar
    length (little padding) and still come in a random order, different each pass."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, window: int = 50):
        super().__init__()
        self.lengths, self.batch_size, self.generator, self.window = list(lengths), batch_size, generator, window

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches: list[list[int]] = []
        span = self.batch_size * self.window
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda index: -self.lengths[index])
            batches.extend(chunk[at : at + self.batch_size] for at in range(0, len(chunk), self.batch_size))
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[index] for index in shuffled])

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def by_length(rows: Sequence[Row], max_tokens: int) -> Iterator[list[int]]:
    """Positions of ``rows`` in batches of similar length, longest first, each at most ``max_tokens`` tokens
    padded (and at least one row): for passes without gradients, where the batch is as large as memory allows."""
    order = sorted(range(len(rows)), key=lambda index: -len(rows[index]))
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) + 1) * len(rows[batch[0]]) > max_tokens:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch
