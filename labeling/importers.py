"""Data coming in: file readers (JSONL, CSV, Parquet) and record parsers, one per layout. They parse and
check, naming the line and field of anything wrong; ``services.dataset_import`` writes what they return.

Layouts (``kind``), detected from the first record unless given:

- ``prompts``: ``{"prompt": str}`` or ``{"messages": [{role, content}, ...]}``
- ``responses``: a prompt with ``"responses": [str or {"text", "origin"}, ...]`` (2..9): a comparison task
- ``preference``: TRL's ``{"prompt", "chosen", "rejected"[, "margin"]}``, plain text or lists of messages
- ``hh``: Anthropic HH-RLHF ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``
- ``oasst``: OpenAssistant message trees, sibling assistant replies ranked by ``rank`` (0 = best)
- ``ranking``: our listwise export, ``{"prompt", "responses", "ranking": [[index, ...], ...], ...}``
- ``sft``: ``{"prompt", "completion"}`` or ``{"messages": [..., {"role": "assistant", ...}]}``

Every optional ``id`` (or ``external_id``) becomes the prompt's external id, and an optional ``split``
(``"eval"`` or ``"train"``) marks a new prompt as an eval prompt, held out of training exports.
"""

import codecs
import contextlib
import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from django.core.exceptions import ValidationError

from labeling import validation
from labeling.errors import ApplicationError, RecordError
from labeling.oasst import oasst_tree_groups

FILE_FORMATS = ("jsonl", "csv", "parquet")
SPLITS = ("train", "eval")  # a record's optional "split": an eval prompt is held out of training exports
HH_TURN = re.compile(r"\n\n(Human|Assistant):")


# --- what a record turns into ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptIn:
    messages: list[dict[str, str]]
    external_id: str = ""
    metadata: dict = field(default_factory=dict)
    is_eval: bool = False


@dataclass(frozen=True)
class ResponseIn:
    text: str
    origin: str = ""  # empty: the import's default origin


@dataclass(frozen=True)
class JudgementIn:
    """A ranking over a task's responses, as groups of indices into them (best first)."""

    ranking: list[list[int]]
    key: str  # identifies the judgement within its origin, so that importing twice stores it once
    origin: str = ""
    rater: str = ""
    source: str = "human"
    margin: float | None = None
    probability: float | None = None
    likert: dict[int, int] = field(default_factory=dict)  # response index -> 1..7
    flags: dict[int, list[str]] = field(default_factory=dict)  # response index -> flags


@dataclass(frozen=True)
class ItemIn:
    """One unit to write: a prompt, perhaps with responses forming a task, judgements of it, or a reply."""

    line: int
    prompt: PromptIn
    responses: list[ResponseIn] = field(default_factory=list)
    judgements: list[JudgementIn] = field(default_factory=list)
    demonstration: str | None = None


# --- reading files -----------------------------------------------------------------------------------------


def file_format_for(name: str, declared: str = "auto") -> str:
    if declared != "auto":
        if declared not in FILE_FORMATS:
            raise ApplicationError(f"Unknown file format '{declared}'; use one of {', '.join(FILE_FORMATS)}.")
        return declared
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    if suffix in FILE_FORMATS:
        return suffix
    raise ApplicationError(f"Cannot tell the format of '{name}' from its name; say jsonl, csv or parquet.")


def _csv_cell(value: str) -> Any:
    """CSV cells holding JSON lists or objects (messages, responses, rankings) are decoded."""
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def read_records(source: IO[bytes], file_format: str) -> Iterator[tuple[int, dict]]:
    """``(line, record)`` pairs. ``line`` is the line in a JSONL or CSV file and the row (from 1) in Parquet.
    A record holding a NUL character (which no text column can store) is refused with its line and field."""
    for line, record in _raw_records(source, file_format):
        where = validation.nul_path(record)
        if where is not None:
            raise RecordError(line, where, validation.NUL_PROBLEM)
        yield line, record


def _raw_records(source: IO[bytes], file_format: str) -> Iterator[tuple[int, dict]]:
    if file_format == "jsonl":
        for line_number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise RecordError(line_number, None, f"not valid JSON ({error.msg}).") from None
            if not isinstance(record, dict):
                raise RecordError(line_number, None, "expected a JSON object.")
            yield line_number, record
    elif file_format == "csv":
        reader = csv.DictReader(codecs.getreader("utf-8")(source))
        try:
            for record in reader:
                yield (
                    reader.line_num,
                    {key: _csv_cell(value) for key, value in record.items() if value not in ("", None)},
                )
        except UnicodeDecodeError as error:
            raise RecordError(reader.line_num + 1, None, f"not UTF-8 text ({error.reason} at byte {error.start} of the "
                              "part being read); save the file as UTF-8.") from None  # fmt: skip
        except csv.Error as error:
            raise RecordError(reader.line_num, None, f"not valid CSV ({error}).") from None
    elif file_format == "parquet":
        import pyarrow
        import pyarrow.parquet as pq

        row = 0
        try:
            parquet = pq.ParquetFile(source)
        except (pyarrow.ArrowException, OSError) as error:
            raise ApplicationError(f"The file is not a Parquet file that can be read: {error}") from None
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                yield row, {key: value for key, value in record.items() if value is not None}
    else:
        raise ApplicationError(f"Unknown file format '{file_format}'.")


# --- recognising and parsing records -----------------------------------------------------------------------


def detect_kind(record: dict) -> str:
    if "message_tree_id" in record or isinstance(record.get("prompt"), dict):
        return "oasst"
    if "chosen" in record and "rejected" in record:
        return "preference" if "prompt" in record else "hh"
    if "responses" in record:
        return "ranking" if "ranking" in record else "responses"
    if "completion" in record:
        return "sft"
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return "sft" if messages[-1].get("role") == "assistant" else "prompts"
    if "prompt" in record:
        return "prompts"
    raise ApplicationError("Cannot tell what these records hold; name the layout (e.g. preference, hh, prompts).")


def _text(value: Any, line: int, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(line, name, "expected non-empty text.")
    return value


def _messages(value: Any, line: int, name: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = [{"role": "user", "content": _text(value, line, name)}]
    if isinstance(value, list):
        value = [
            {"role": turn.get("role"), "content": turn.get("content")} if isinstance(turn, dict) else turn
            for turn in value
        ]
    try:
        validation.validate_messages(value)
    except ValidationError as error:
        raise RecordError(line, name, error.messages[0]) from None
    return value


def _prompt(record: dict, line: int) -> PromptIn:
    if "messages" in record:
        messages = _messages(record["messages"], line, "messages")
    elif "prompt" in record:
        messages = _messages(record["prompt"], line, "prompt")
    else:
        raise RecordError(line, "prompt", "missing: give 'prompt' (text or messages) or 'messages'.")
    external_id = record.get("id", record.get("external_id", ""))
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RecordError(line, "metadata", "expected an object.")
    split = record.get("split") or "train"
    if split not in SPLITS:
        raise RecordError(line, "split", f"expected one of {', '.join(SPLITS)}, not {split!r}.")
    return PromptIn(messages=messages, external_id=str(external_id), metadata=metadata, is_eval=split == "eval")


def _completion(value: Any, line: int, name: str) -> str:
    """A reply as text: plain text, or the assistant turns of a list of messages."""
    if isinstance(value, list):
        parts = [turn.get("content") for turn in value if isinstance(turn, dict) and turn.get("role") == "assistant"]
        texts = [part for part in parts if isinstance(part, str)]
        if not texts or len(texts) != len(parts):
            raise RecordError(line, name, "expected text or a list of assistant messages.")
        return "\n\n".join(texts)
    if not isinstance(value, str):
        raise RecordError(line, name, "expected text or a list of assistant messages.")
    if not value.strip():
        raise RecordError(line, name, "the reply is empty.")
    return value


def record_key(record: dict) -> str:
    """A stable id for a record without one, so that importing the same file twice stores it once."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:40]


def _number(record: dict, name: str, line: int, low: float, high: float | None = None) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, str):  # CSV cells are text
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise RecordError(line, name, f"expected a number {bound}, got {value!r}.")
    return float(value)


def _responses(value: Any, line: int) -> list[ResponseIn]:
    if not isinstance(value, list):
        raise RecordError(line, "responses", "expected a list of responses.")
    responses = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            text, origin = item.get("text"), item.get("origin") or ""
        else:
            text, origin = item, ""
        if not isinstance(text, str):
            raise RecordError(line, "responses", f"response {index} has no text.")
        responses.append(ResponseIn(text=text, origin=str(origin)))
    try:
        validation.validate_response_count(len(responses))
    except ValidationError as error:
        raise RecordError(line, "responses", error.messages[0]) from None
    return responses


def _per_response(value: Any, count: int, line: int, name: str) -> dict[int, Any]:
    """``likert`` / ``flags`` given as a list (one per response, null for none) or an index-keyed object."""
    if value is None or value == {} or value == []:
        return {}
    if isinstance(value, list):
        if len(value) != count:
            raise RecordError(line, name, f"expected one entry per response ({count}).")
        return {index: item for index, item in enumerate(value) if item not in (None, [])}
    if isinstance(value, dict):
        try:
            return {int(key): item for key, item in value.items()}
        except ValueError:
            raise RecordError(line, name, "keys must be response positions (0, 1, ...).") from None
    raise RecordError(line, name, "expected a list or an object.")


def parse_prompts(record: dict, line: int) -> list[ItemIn]:
    return [ItemIn(line=line, prompt=_prompt(record, line))]


def parse_responses(record: dict, line: int) -> list[ItemIn]:
    return [ItemIn(line=line, prompt=_prompt(record, line), responses=_responses(record.get("responses"), line))]


def _hh_prompt(record: dict) -> dict:
    """A preference record whose prompt is an HH transcript ending with the assistant's turn opened (TRL's
    text form of HH-RLHF) gets that conversation as messages, turn by turn, instead of one user message."""
    prompt = record.get("prompt")
    if not (isinstance(prompt, str) and prompt.startswith("\n\nHuman:") and prompt.rstrip().endswith("Assistant:")):
        return record
    try:
        messages, rest = hh_split(prompt.rstrip())
    except ValueError:
        return record
    return {**record, "prompt": messages} if messages and not rest else record


def parse_preference(record: dict, line: int) -> list[ItemIn]:
    record = _hh_prompt(record)
    chosen = _completion(record.get("chosen"), line, "chosen")
    rejected = _completion(record.get("rejected"), line, "rejected")
    judgement = JudgementIn(
        ranking=[[0], [1]],
        key=str(record.get("id") or record_key(record)),
        margin=_number(record, "margin", line, 0.0, validation.MARGIN_MAX),
        source=record.get("source", "human"),
        probability=_number(record, "probability", line, 0.0, 1.0),
    )
    return [
        ItemIn(
            line=line,
            prompt=_prompt(record, line),
            responses=[ResponseIn(chosen), ResponseIn(rejected)],
            judgements=[judgement],
        )
    ]


def hh_split(transcript: str) -> tuple[list[dict[str, str]], str]:
    """An HH-RLHF transcript as (prompt messages, final assistant reply)."""
    cut = transcript.rfind("\n\nAssistant:")
    if cut < 0:
        raise ValueError("it has no '\\n\\nAssistant:' turn")
    prefix, reply = transcript[:cut], transcript[cut + len("\n\nAssistant:") :]
    pieces = HH_TURN.split(prefix)
    if pieces[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    messages = [
        {"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
        for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]
    return messages, reply.strip()


def parse_hh(record: dict, line: int) -> list[ItemIn]:
    chosen_text = _text(record.get("chosen"), line, "chosen")
    rejected_text = _text(record.get("rejected"), line, "rejected")
    try:
        messages, chosen = hh_split(chosen_text)
    except ValueError as error:
        raise RecordError(line, "chosen", f"not an HH transcript: {error}.") from None
    try:
        rejected_messages, rejected = hh_split(rejected_text)
    except ValueError as error:
        raise RecordError(line, "rejected", f"not an HH transcript: {error}.") from None
    if rejected_messages != messages:
        raise RecordError(line, "rejected", "its conversation before the last reply differs from 'chosen'.")
    record_with_prompt = {"messages": messages, "id": record.get("id", "")}
    judgement = JudgementIn(ranking=[[0], [1]], key=str(record.get("id") or record_key(record)))
    return [
        ItemIn(
            line=line,
            prompt=_prompt(record_with_prompt, line),
            responses=[ResponseIn(chosen), ResponseIn(rejected)],
            judgements=[judgement],
        )
    ]


def parse_ranking(record: dict, line: int) -> list[ItemIn]:
    responses = _responses(record.get("responses"), line)
    try:
        ranking = validation.validate_ranking(record.get("ranking"), range(len(responses)))
    except ValidationError as error:
        message = error.messages[0].replace("response ids", "response positions").replace("Response ", "Position ")
        raise RecordError(line, "ranking", message) from None
    likert = _per_response(record.get("likert"), len(responses), line, "likert")
    flags = _per_response(record.get("flags"), len(responses), line, "flags")
    try:
        validation.validate_likert({str(key): value for key, value in likert.items()}, range(len(responses)))
    except ValidationError as error:
        raise RecordError(line, "likert", error.messages[0]) from None
    source = record.get("source", "human")
    if source not in ("human", "ai"):
        raise RecordError(line, "source", f"expected 'human' or 'ai', got {source!r}.")
    judgement = JudgementIn(
        ranking=ranking,
        key=str(record.get("judgement_id") or record.get("id") or record_key(record)),
        origin=str(record.get("origin") or ""),
        rater=str(record.get("rater") or ""),
        source=source,
        margin=_number(record, "margin", line, 0.0, validation.MARGIN_MAX),
        probability=_number(record, "probability", line, 0.0, 1.0),
        likert=likert,
        flags=flags,
    )
    return [ItemIn(line=line, prompt=_prompt(record, line), responses=responses, judgements=[judgement])]


def parse_sft(record: dict, line: int) -> list[ItemIn]:
    if "completion" in record:
        return [
            ItemIn(
                line=line,
                prompt=_prompt(record, line),
                demonstration=_completion(record["completion"], line, "completion"),
            )
        ]
    messages = record.get("messages")
    if not isinstance(messages, list) or len(messages) < 2 or not isinstance(messages[-1], dict):
        raise RecordError(line, "messages", "expected a conversation ending with the assistant's reply.")
    if messages[-1].get("role") != "assistant":
        raise RecordError(line, "messages", "the last message must be the assistant's reply.")
    reply = _text(messages[-1].get("content"), line, "messages")
    prompt = _prompt({**record, "messages": messages[:-1]}, line)
    return [ItemIn(line=line, prompt=prompt, demonstration=reply)]


def parse_oasst(record: dict, line: int) -> list[ItemIn]:
    items = []
    for group in oasst_tree_groups(record, line):
        if len(group.replies) > validation.K_MAX:
            raise RecordError(line, "prompt", f"message {group.external_id} has more than 9 ranked replies.")
        tiers = group.ranking_groups()
        order = [reply for tier in tiers for reply in tier]
        position = {reply.external_id: index for index, reply in enumerate(order)}
        ranking = [[position[reply.external_id] for reply in tier] for tier in tiers]
        items.append(
            ItemIn(
                line=line,
                prompt=PromptIn(messages=group.messages, external_id=group.external_id),
                responses=[ResponseIn(reply.text, reply.origin) for reply in order],
                judgements=[JudgementIn(ranking=ranking, key=group.external_id)],
            )
        )
    return items


PARSERS = {
    "prompts": parse_prompts,
    "responses": parse_responses,
    "preference": parse_preference,
    "hh": parse_hh,
    "oasst": parse_oasst,
    "ranking": parse_ranking,
    "sft": parse_sft,
}
KINDS = tuple(PARSERS)  # the record layouts, by name


@dataclass
class Invalid:
    """Records left out because they do not parse: how many, and the first ``kept`` of them."""

    kept: int = 100
    count: int = 0
    records: list[dict] = field(default_factory=list)  # {"line", "field", "message"}

    def add(self, line: int, error: RecordError) -> None:
        self.count += 1
        if len(self.records) < self.kept:
            self.records.append({"line": line, "field": error.extra.get("field"), "message": error.message})


def parse_batches(
    records: Iterable[tuple[int, dict]], kind: str = "auto", size: int = 2000, invalid: Invalid | None = None
) -> Iterator[tuple[str, list[ItemIn]]]:
    """The records parsed as they are read, in batches of about ``size`` items that never split a record:
    ``(kind, items)`` for each. The kind is the one given, or recognised from the first record. A record that
    does not parse stops the import, unless ``invalid`` is given: then it is skipped and noted there."""
    items: list[ItemIn] = []
    parser = None
    for line, record in records:
        if parser is None:
            if kind == "auto":
                kind = detect_kind(record)
            if kind not in PARSERS:
                raise ApplicationError(f"Unknown layout '{kind}'; use one of {', '.join(KINDS)}.")
            parser = PARSERS[kind]
        try:
            items.extend(parser(record, line))
        except RecordError as error:
            if invalid is None:
                raise
            invalid.add(line, error)
        if len(items) >= size:
            yield kind, items
            items = []
    if parser is None:
        raise ApplicationError("The file holds no records.")
    if items:
        yield kind, items


def plain_prompts(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``(line number, prompt)`` for a file holding one JSON string per line."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(line_number, None, f"not valid JSON ({error.msg}).") from None
        if not isinstance(text, str) or not text.strip():
            raise RecordError(line_number, None, "expected a non-empty JSON string.")
        yield line_number, text
