"""Data going out, in formats trainers read as they are:

- ``preference``: TRL's ``{"prompt", "chosen", "rejected"[, "margin"]}``; a K-wise ranking gives every
  ordered pair of responses in different groups (ties give none).
- ``ranking``: one record per judgement, for listwise reward training: ``{"prompt", "responses",
  "ranking": [[index, ...], ...], "likert", "flags", "rater", "origin", "source", "probability", "margin",
  "all_bad", "task_id", "response_ids", "judgement_id", "created_at"}``; ``ranking`` groups positions in
  ``responses``, best first; ``likert`` and ``flags`` hold one entry per response; ``principle``
  names the principle an AI feedback label answered (null for people).
- ``sft``: demonstrations as ``{"prompt", "completion"}`` (or ``{"messages"}`` when conversational).
- ``hh``: Anthropic HH-RLHF transcripts ``{"chosen", "rejected"}``.
- ``prompts``: every prompt of the project (in the filter's time range) as ``{"prompt_id", "prompt",
  "messages"}``: what PPO samples from and what a model writes new responses to. ``messages`` always holds the
  conversation turn by turn, so a multi-turn prompt reaches a chat model as turns even when ``prompt`` is text.

``conversational`` writes prompts and replies as lists of ``{role, content}`` messages instead of text.
Records are read with a server-side cursor and written as they come, so memory stays flat.
"""

import gc
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import orjson

from labeling import consensus, selectors
from labeling.errors import ApplicationError

EXPORT_KINDS = ("preference", "ranking", "consensus", "sft", "hh", "prompts")
FILE_FORMATS = ("jsonl", "parquet")
BLOCK = 5000
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


class BytesWriter(Protocol):
    """Where an export goes: a file, a spooled temporary file, a stream that hashes what passes."""

    def write(self, data: bytes, /) -> int: ...


@dataclass
class ExportStats:
    rows: int = 0
    judgements: int = 0
    demonstrations: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "judgements": self.judgements,
            "demonstrations": self.demonstrations,
            "by_source": self.by_source,
        }


def prompt_value(messages: list[dict], conversational: bool):
    """The prompt as messages, or as text: a single user turn is its content; a longer conversation is
    written turn by turn ("User: ...", "Assistant: ...")."""
    if conversational:
        return messages
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{ROLE_NAMES.get(turn['role'], turn['role'])}: {turn['content']}" for turn in messages)


def reply_value(text: str, conversational: bool):
    return [{"role": "assistant", "content": text}] if conversational else text


def hh_transcript(messages: list[dict], reply: str) -> str:
    """The HH-RLHF form: "\\n\\nHuman: ...\\n\\nAssistant: ..." ending with the reply (system turns left out)."""
    turns = [
        f"\n\n{'Human' if turn['role'] == 'user' else 'Assistant'}: {turn['content']}"
        for turn in messages
        if turn["role"] != "system"
    ]
    return "".join(turns) + f"\n\nAssistant: {reply}"


def _judgement_blocks(selection: selectors.ExportFilter, fields: tuple[str, ...]) -> Iterator[tuple[list[tuple], dict]]:
    """Blocks of judgement rows (``fields``, the first being ``task_id``) with the text of their tasks; each
    task's text is read once."""
    rows = selectors.judgements_for_export(selection=selection, fields=fields).iterator(chunk_size=BLOCK)
    contents: dict[int, selectors.TaskContent] = {}
    while block := list(islice(rows, BLOCK)):
        task_ids = {row[0] for row in block}
        missing = [task_id for task_id in task_ids if task_id not in contents]
        if missing:
            contents.update(selectors.task_contents(task_ids=missing))
        yield block, contents
        lowest = min(task_ids)  # rows come ordered by task: earlier tasks will not be seen again
        for task_id in [task_id for task_id in contents if task_id < lowest]:
            del contents[task_id]


def _pairs(ranking: list[list[int]]) -> Iterator[tuple[int, int]]:
    for upper, group in enumerate(ranking):
        for lower_group in ranking[upper + 1 :]:
            for winner in group:
                for loser in lower_group:
                    yield winner, loser


PAIR_FIELDS = ("task_id", "source", "ranking_text", "margin")


def preference_records(selection, stats: ExportStats, *, conversational: bool = False, hh: bool = False):
    """Pairs. When any selected judgement has a margin, every pair carries one: an unknown margin is written
    as 0, which TRL's reward loss treats exactly like no margin (a column with gaps would stop TRL)."""
    with_margins = not hh and selectors.judgements_for_export(selection=selection).filter(margin__isnull=False).exists()
    for block, contents in _judgement_blocks(selection, PAIR_FIELDS):
        for task_id, source, ranking, margin in block:
            ranking = orjson.loads(ranking)
            content = contents[task_id]
            stats.judgements += 1
            stats.by_source[source] = stats.by_source.get(source, 0) + 1
            for winner, loser in _pairs(ranking):
                chosen, rejected = content.texts[winner], content.texts[loser]
                record: dict[str, object]
                if hh:
                    record = {
                        "chosen": hh_transcript(content.messages, chosen),
                        "rejected": hh_transcript(content.messages, rejected),
                    }
                else:
                    record = {
                        "prompt": prompt_value(content.messages, conversational),
                        "chosen": reply_value(chosen, conversational),
                        "rejected": reply_value(rejected, conversational),
                    }
                    if with_margins:
                        record["margin"] = margin if margin is not None else 0.0
                stats.rows += 1
                yield record


RANKING_FIELDS = (
    "task_id", "id", "rater__username", "source", "origin", "ranking_text", "margin", "all_bad", "likert_text",
    "flags_text", "probability", "created_at", "principle__name",
)  # fmt: skip


def _json_object(text: str) -> dict:
    return {} if text == "{}" else orjson.loads(text)  # most judgements carry no scores or flags


def ranking_records(selection, stats: ExportStats, *, conversational: bool = False):
    """One record per judgement. ``weight`` is the rater's trust from the last audit (gold score, agreement:
    labeling.audit.trust_weights); 1.0 for a rater not audited yet, an AI label or an imported judgement."""
    weights = selectors.rater_weights(project_id=selection.project_id)
    for block, contents in _judgement_blocks(selection, RANKING_FIELDS):
        for row in block:
            (
                task_id,
                judgement_id,
                rater,
                source,
                origin,
                ranking,
                margin,
                all_bad,
                likert,
                flags,
                probability,
                created,
                principle,
            ) = row
            content = contents[task_id]
            position, keys = content.position, content.keys
            ranking, likert, flags = orjson.loads(ranking), _json_object(likert), _json_object(flags)
            stats.judgements += 1
            stats.by_source[source] = stats.by_source.get(source, 0) + 1
            stats.rows += 1
            yield {
                "prompt": prompt_value(content.messages, conversational),
                "responses": list(content.texts.values()),
                "ranking": [[position[response_id] for response_id in group] for group in ranking],
                "likert": [likert.get(key) for key in keys] if likert else [None] * len(keys),
                "flags": [flags.get(key, []) for key in keys] if flags else [[] for _ in keys],
                "rater": rater,
                "origin": origin,
                "source": source,
                "probability": probability,
                "margin": margin,
                "all_bad": all_bad,
                "task_id": task_id,
                "response_ids": content.response_ids,
                "judgement_id": judgement_id,
                "created_at": created.isoformat(),
                "principle": principle,
                "weight": weights.get(rater, 1.0) if rater else 1.0,
            }


CONSENSUS_FIELDS = ("task_id", "rater__username", "ranking_text")


def consensus_records(selection, stats: ExportStats, *, conversational: bool = False):
    """One record per task with judgements: the reviewer's ranking where the task was adjudicated, else the
    ranking of its judgements merged by ranked pairs (labeling.consensus), each judgement weighted by its
    rater's trust; ``agreement`` is the weighted share of the judgements' pairwise votes that it keeps."""
    weights = selectors.rater_weights(project_id=selection.project_id)
    adjudicated = selectors.adjudicated_rankings(project_id=selection.project_id)

    def record(task_id: int, judgements: list[tuple[list[list[int]], float]], contents) -> dict:
        content = contents[task_id]
        merged = adjudicated.get(task_id) or consensus.ranked_pairs(content.response_ids, judgements)
        stats.rows += 1
        return {
            "prompt": prompt_value(content.messages, conversational),
            "responses": list(content.texts.values()),
            "ranking": [[content.position[response_id] for response_id in group] for group in merged],
            "method": "adjudicated" if task_id in adjudicated else "ranked_pairs",
            "judgements": len(judgements),
            "agreement": consensus.agreement_with(merged, judgements),
            "task_id": task_id,
            "response_ids": content.response_ids,
        }

    current: int | None = None
    judgements: list[tuple[list[list[int]], float]] = []
    contents: dict = {}
    for block, contents in _judgement_blocks(selection, CONSENSUS_FIELDS):
        for task_id, rater, ranking in block:
            if task_id != current and current is not None:
                yield record(current, judgements, contents)
                judgements = []
            current = task_id
            stats.judgements += 1
            judgements.append((orjson.loads(ranking), weights.get(rater, 1.0) if rater else 1.0))
    if current is not None:
        yield record(current, judgements, contents)


def sft_records(selection, stats: ExportStats, *, conversational: bool = False):
    for _id, messages, text, _author, _origin, _created in selectors.demonstrations_for_export(
        selection=selection
    ).iterator(chunk_size=BLOCK):
        stats.demonstrations += 1
        stats.rows += 1
        if conversational:
            yield {"messages": [*messages, {"role": "assistant", "content": text}]}
        else:
            yield {"prompt": prompt_value(messages, False), "completion": text}


def prompt_records(selection, stats: ExportStats, *, conversational: bool = False):
    for prompt_id, messages in selectors.prompts_for_export(selection=selection).iterator(chunk_size=BLOCK):
        stats.rows += 1
        yield {"prompt_id": prompt_id, "prompt": prompt_value(messages, conversational), "messages": messages}


def export_records(kind: str, selection: selectors.ExportFilter, stats: ExportStats, *, conversational: bool = False):
    if kind == "preference":
        return preference_records(selection, stats, conversational=conversational)
    if kind == "hh":
        return preference_records(selection, stats, hh=True)
    if kind == "ranking":
        return ranking_records(selection, stats, conversational=conversational)
    if kind == "consensus":
        return consensus_records(selection, stats, conversational=conversational)
    if kind == "sft":
        return sft_records(selection, stats, conversational=conversational)
    if kind == "prompts":
        return prompt_records(selection, stats, conversational=conversational)
    raise ApplicationError(f"Unknown export kind '{kind}'; use one of {', '.join(EXPORT_KINDS)}.")


# --- writers -----------------------------------------------------------------------------------------------


@contextmanager
def collection_paused() -> Iterator[None]:
    """The cyclic garbage collector off while one block of records is made and encoded. The records are
    containers without cycles, so a collection finds nothing, but with thousands of them alive each one walks
    them all: it took half of a Parquet export's time. Process-wide while it lasts (one block, well under a
    second); never held across a ``yield``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def jsonl_chunks(records: Iterable[dict], lines_per_chunk: int = 1000) -> Iterator[bytes]:
    """JSON lines (UTF-8, encoded by orjson), a thousand at a time: what a streaming HTTP response sends."""
    records = iter(records)
    while True:
        with collection_paused():
            lines = [orjson.dumps(record) for record in islice(records, lines_per_chunk)]
        if not lines:
            return
        yield b"\n".join(lines) + b"\n"


def write_jsonl(records: Iterable[dict], stream: BytesWriter) -> None:
    for chunk in jsonl_chunks(records):
        stream.write(chunk)


def parquet_schema(kind: str, conversational: bool):
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    prompt = messages if conversational else pa.string()
    reply = messages if conversational else pa.string()
    if kind == "preference":
        return pa.schema([("prompt", prompt), ("chosen", reply), ("rejected", reply), ("margin", pa.float64())])
    if kind == "hh":
        return pa.schema([("chosen", pa.string()), ("rejected", pa.string())])
    if kind == "prompts":
        return pa.schema([("prompt_id", pa.int64()), ("prompt", prompt), ("messages", messages)])
    if kind == "sft":
        if conversational:
            return pa.schema([("messages", messages)])
        return pa.schema([("prompt", pa.string()), ("completion", pa.string())])
    if kind == "consensus":
        return pa.schema(
            [
                ("prompt", prompt),
                ("responses", pa.list_(pa.string())),
                ("ranking", pa.list_(pa.list_(pa.int64()))),
                ("method", pa.string()),
                ("judgements", pa.int64()),
                ("agreement", pa.float64()),
                ("task_id", pa.int64()),
                ("response_ids", pa.list_(pa.int64())),
            ]
        )
    return pa.schema(
        [
            ("prompt", prompt),
            ("responses", pa.list_(pa.string())),
            ("ranking", pa.list_(pa.list_(pa.int64()))),
            ("likert", pa.list_(pa.int64())),
            ("flags", pa.list_(pa.list_(pa.string()))),
            ("rater", pa.string()),
            ("origin", pa.string()),
            ("source", pa.string()),
            ("probability", pa.float64()),
            ("margin", pa.float64()),
            ("all_bad", pa.bool_()),
            ("task_id", pa.int64()),
            ("response_ids", pa.list_(pa.int64())),
            ("judgement_id", pa.int64()),
            ("created_at", pa.string()),
            ("principle", pa.string()),
            ("weight", pa.float64()),
        ]
    )


def record_tables(records: Iterable[dict], schema, block: int = BLOCK) -> Iterator:
    """Arrow tables of ``block`` records each, in ``schema``. Each block goes to Arrow a column at a time (three
    times faster than row by row); a field a record lacks is null."""
    import pyarrow as pa

    records = iter(records)
    while True:
        with collection_paused():
            rows = list(islice(records, block))
            if not rows:
                return
            columns = {field.name: [record.get(field.name) for record in rows] for field in schema}
            table = pa.Table.from_pydict(columns, schema=schema)
            del rows, columns
        yield table


def write_parquet(records: Iterable[dict], stream: BytesWriter, *, kind: str, conversational: bool = False) -> None:
    """Parquet in row groups of ``BLOCK`` records, written as they come."""
    import pyarrow.parquet as pq

    schema = parquet_schema(kind, conversational)
    with pq.ParquetWriter(stream, schema, compression="zstd") as writer:
        for table in record_tables(records, schema):
            writer.write_table(table)


def write_export(
    kind: str,
    file_format: str,
    selection: selectors.ExportFilter,
    stream: BytesWriter,
    *,
    conversational: bool = False,
) -> ExportStats:
    """Write one export to ``stream``; returns what it counted."""
    if file_format not in FILE_FORMATS:
        raise ApplicationError(f"Unknown file format '{file_format}'; use one of {', '.join(FILE_FORMATS)}.")
    stats = ExportStats()
    records = export_records(kind, selection, stats, conversational=conversational)
    if file_format == "jsonl":
        write_jsonl(records, stream)
    else:
        write_parquet(records, stream, kind=kind, conversational=conversational)
    return stats


SPOOL_IN_MEMORY = 64 * 1024 * 1024


def export_spooled(kind: str, file_format: str, selection: selectors.ExportFilter, *, conversational: bool = False):
    """One export written whole to a temporary file (in memory up to 64 MiB), rewound for a download response
    (which closes it). Parquet needs this: its footer comes last."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (the response closes it)
    write_export(kind, file_format, selection, spool, conversational=conversational)
    spool.seek(0)
    return spool
