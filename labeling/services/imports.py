"""Imports: parsed records (``importers``) written to a project all or nothing, many rows per statement,
duplicates skipped and counted."""

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.core.exceptions import ValidationError
from django.db import transaction

from labeling import validation
from labeling.errors import ApplicationError
from labeling.models import ComparisonTask, Demonstration, Judgement, Project, Prompt, Response, TaskResponse, User
from labeling.raw_sql import insert_rows
from labeling.services.content import task_statuses_refresh

IMPORT_BATCH = 2000


@dataclass
class ImportResult:
    kind: str
    records: int
    created: dict[str, int]
    skipped: dict[str, int]
    invalid: list[dict] = field(default_factory=list)  # with skip_invalid: the first records skipped, by line

    def as_dict(self) -> dict:
        return {"kind": self.kind, "records": self.records, "created": self.created, "skipped": self.skipped,
                "invalid": self.invalid}  # fmt: skip


def _chunks(values: Sequence, size: int = IMPORT_BATCH):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _import_prompts(project: Project, items: list, created: Counter, skipped: Counter) -> tuple[list[int], set[int]]:
    """The prompt id of every item (an existing prompt with the same external id or conversation, or a new
    one), and the ids of the new prompts."""
    hashes = [Prompt.hash_messages(item.prompt.messages) for item in items]
    external_ids = sorted({item.prompt.external_id for item in items if item.prompt.external_id})
    by_external: dict[str, int] = {}
    for chunk in _chunks(external_ids):
        by_external.update(
            Prompt.objects.filter(project=project, external_id__in=chunk).values_list("external_id", "id")
        )
    by_hash: dict[str, int] = {}
    for chunk in _chunks(sorted(set(hashes))):
        for content_hash, prompt_id in Prompt.objects.filter(project=project, content_hash__in=chunk).values_list(
            "content_hash", "id"
        ):
            by_hash.setdefault(content_hash, prompt_id)

    keys: list[str] = []
    known: dict[str, int] = {}
    new: dict[str, dict] = {}
    for item, content_hash in zip(items, hashes, strict=True):
        external_id = item.prompt.external_id
        key = f"x:{external_id}" if external_id else f"h:{content_hash}"
        keys.append(key)
        if key in known or key in new:
            continue
        existing = by_external.get(external_id) if external_id else None
        if existing is None:
            existing = by_hash.get(content_hash)
        if existing is not None:
            known[key] = existing
            continue
        new[key] = {
            "project_id": project.pk,
            "messages": item.prompt.messages,
            "source": "import",
            "external_id": external_id,
            "content_hash": content_hash,
            "metadata": item.prompt.metadata,
            "is_eval": item.prompt.is_eval,
        }
    new_ids = insert_rows(Prompt, list(new.values()))
    known.update(zip(new, new_ids, strict=True))
    created["prompts"] += len(new)
    skipped["prompts"] += len(items) - len(new)
    return [known[key] for key in keys], set(new_ids)


def _existing_for_prompts(model, prompt_ids: set[int], fields: tuple[str, ...]) -> list[tuple]:
    rows: list[tuple] = []
    for chunk in _chunks(sorted(prompt_ids)):
        rows.extend(model.objects.filter(prompt_id__in=chunk).values_list(*fields))
    return rows


def _line_error(line: int, field_name: str, problem: str) -> ApplicationError:
    return ApplicationError(f"Line {line}, field '{field_name}': {problem}", {"line": line, "field": field_name})


@dataclass
class _Import:
    """What one import has written so far (counts), and which prompts of the batch at hand existed before it."""

    project: Project
    created: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    earlier: set[int] = field(default_factory=set)  # the batch's prompts that existed before it (duplicates possible)


@transaction.atomic
def dataset_import(
    *,
    project: Project,
    batches: Iterable[tuple[str, list]],
    origin: str,
    response_origin: str = "imported",
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Write parsed import items (``importers.ItemIn``), batch by batch as they are read, to the project,
    all or nothing: one transaction, so a bad record late in a file leaves nothing written.

    Duplicates are skipped and counted: a prompt with the same external id (or the same conversation), a
    response with the same text on the same prompt, a task over the same responses, a judgement with the
    same key from the same origin (or rater), a demonstration with the same text. Importing a file twice
    therefore changes nothing the second time. Each batch looks up what the database holds, earlier batches
    included, so duplicates across batches are caught too. ``origin`` names where judgements and
    demonstrations without a rater came from. ``progress`` hears the number of records written so far.
    """
    state = _Import(project=project)
    kind = ""
    records = 0
    for batch_kind, items in batches:
        kind = batch_kind
        _import_batch(state, items, origin, response_origin)
        records += len({item.line for item in items})
        if progress is not None:
            progress(records)
    return ImportResult(
        kind=kind,
        records=records,
        created={what: count for what, count in state.created.items() if count},
        skipped={what: count for what, count in state.skipped.items() if count},
    )


def _import_batch(state: _Import, items: list, origin: str, response_origin: str) -> None:
    """One batch's rows, each kind by its own step in the order their foreign keys need."""
    prompt_ids, new_prompt_ids = _import_prompts(state.project, items, state.created, state.skipped)
    paired = list(zip(items, prompt_ids, strict=True))
    # Prompts created by this batch have no responses, tasks or demonstrations yet: no need to look.
    state.earlier = {prompt_id for prompt_id in prompt_ids if prompt_id not in new_prompt_ids}
    with_responses = [(item, prompt_id) for item, prompt_id in paired if item.responses]
    response_ids = _import_responses(state, with_responses, response_origin)
    item_tasks = _import_tasks(state, with_responses, response_ids)
    _import_judgements(state, item_tasks, origin)
    _import_demonstrations(state, paired, origin)


def _import_responses(state: _Import, with_responses: list[tuple], response_origin: str) -> dict[tuple[int, str], int]:
    """The id of every item's responses, keyed by (prompt id, text): existing ones, and new ones written."""
    response_ids: dict[tuple[int, str], int] = {}
    for prompt_id, text, response_id in _existing_for_prompts(
        Response, {prompt_id for _, prompt_id in with_responses} & state.earlier, ("prompt_id", "text", "id")
    ):
        response_ids.setdefault((prompt_id, text), response_id)
    new_responses: dict[tuple[int, str], dict] = {}
    for item, prompt_id in with_responses:
        texts = [response.text for response in item.responses]
        if len(set(texts)) != len(texts):
            raise _line_error(item.line, "responses", "two responses have the same text.")
        for response in item.responses:
            key = (prompt_id, response.text)
            if key in response_ids or key in new_responses:
                state.skipped["responses"] += 1
                continue
            new_responses[key] = {
                "prompt_id": prompt_id,
                "text": response.text,
                "origin": response.origin or response_origin,
            }
    response_ids.update(zip(new_responses, insert_rows(Response, list(new_responses.values())), strict=True))
    state.created["responses"] += len(new_responses)
    return response_ids


def _import_tasks(
    state: _Import, with_responses: list[tuple], response_ids: dict[tuple[int, str], int]
) -> list[tuple[object, int, list[int]]]:
    """A task per item over its responses, keyed by (prompt id, the set of its responses); returns each item
    with its task's key and its response ids in the item's order."""
    task_ids = _existing_tasks(state, with_responses)
    item_tasks: list[tuple[object, tuple, list[int]]] = []
    new_tasks: dict[tuple[int, frozenset], list[int]] = {}
    for item, prompt_id in with_responses:
        ordered = [response_ids[(prompt_id, response.text)] for response in item.responses]
        key = (prompt_id, frozenset(ordered))
        item_tasks.append((item, key, ordered))
        if key in task_ids or key in new_tasks:
            state.skipped["tasks"] += 1
            continue
        new_tasks[key] = ordered
    task_rows = [
        {"project_id": state.project.pk, "prompt_id": prompt_id, "required_judgements": state.project.overlap}
        for prompt_id, _ in new_tasks
    ]
    task_ids.update(zip(new_tasks, insert_rows(ComparisonTask, task_rows), strict=True))
    insert_rows(
        TaskResponse,
        [
            {"task_id": task_ids[key], "response_id": response_id, "position": position}
            for key, ordered in new_tasks.items()
            for position, response_id in enumerate(ordered)
        ],
    )
    state.created["tasks"] += len(new_tasks)
    return [(item, task_ids[key], ordered) for item, key, ordered in item_tasks]


def _existing_tasks(state: _Import, with_responses: list[tuple]) -> dict[tuple[int, frozenset], int]:
    """The tasks already on the items' prompts, keyed by (prompt id, the set of their responses)."""
    task_ids: dict[tuple[int, frozenset], int] = {}
    existing_slots: dict[int, list[int]] = {}
    prompt_of_task: dict[int, int] = {}
    for chunk in _chunks(sorted({prompt_id for _, prompt_id in with_responses} & state.earlier)):
        for task_id, prompt_id, response_id in TaskResponse.objects.filter(task__prompt_id__in=chunk).values_list(
            "task_id", "task__prompt_id", "response_id"
        ):
            existing_slots.setdefault(task_id, []).append(response_id)
            prompt_of_task[task_id] = prompt_id
    for task_id, slots in existing_slots.items():
        task_ids.setdefault((prompt_of_task[task_id], frozenset(slots)), task_id)
    return task_ids


def _import_judgements(state: _Import, item_tasks: list[tuple], origin: str) -> None:
    """The items' judgements, new ones only, then the tasks they complete."""
    candidates = _judgement_rows(item_tasks, origin)
    seen = _judgements_seen(candidates)
    new_judgements = []
    for row in candidates:
        rater_id = row["rater_id"]
        identity = (
            ("rater", rater_id, row["client_submission_id"])
            if rater_id
            else ("origin", row["origin"], row["client_submission_id"])
        )
        once_per_task = ("task", rater_id, row["task_id"])
        if identity in seen or (rater_id and once_per_task in seen):
            state.skipped["judgements"] += 1
            continue
        seen.update({identity, once_per_task} if rater_id else {identity})
        new_judgements.append(row)
    insert_rows(Judgement, new_judgements)
    state.created["judgements"] += len(new_judgements)
    for chunk in _chunks(sorted({row["task_id"] for row in new_judgements})):
        task_statuses_refresh(task_ids=chunk)


def _judgement_rows(item_tasks: list[tuple], origin: str) -> list[dict]:
    """Each item's judgements as rows: the ranking's positions become the task's response ids."""
    rater_names = sorted({j.rater for item, _, _ in item_tasks for j in item.judgements if j.rater})
    raters: dict[str, int] = {}
    for chunk in _chunks(rater_names):
        raters.update(User.objects.filter(username__in=chunk).values_list("username", "id"))
    rows: list[dict] = []
    for item, task_id, ordered in item_tasks:
        for judgement in item.judgements:
            try:
                validation.validate_flags(
                    {str(position): names for position, names in judgement.flags.items()},
                    range(len(ordered)),
                    Judgement.Flag.values,
                )
            except ValidationError as error:
                raise _line_error(item.line, "flags", error.messages[0]) from None
            rater_id = raters.get(judgement.rater) if judgement.source == Judgement.Source.HUMAN else None
            judgement_origin = judgement.origin or origin
            if judgement.rater and rater_id is None:
                judgement_origin = judgement.rater  # a rater of another system: keep their name as the origin
            rows.append(
                {
                    "task_id": task_id,
                    "rater_id": rater_id,
                    "source": judgement.source,
                    "origin": "" if rater_id else judgement_origin,
                    "ranking": [[ordered[position] for position in tier] for tier in judgement.ranking],
                    "margin": judgement.margin,
                    "likert": {str(ordered[position]): score for position, score in judgement.likert.items()},
                    "flags": {str(ordered[position]): names for position, names in judgement.flags.items()},
                    "client_submission_id": judgement.key[:64],
                    "probability": judgement.probability,
                }
            )
    return rows


def _judgements_seen(candidates: list[dict]) -> set[tuple]:
    """What the stored judgements already cover: (rater, key) or (origin, key), and (task, rater). Each
    lookup names the rater or the origin with the keys, so that it runs on their unique indexes: a lookup by
    key alone would read the whole table once per batch."""
    seen: set[tuple] = set()
    by_rater: dict[int, set[str]] = {}
    by_origin: dict[str, set[str]] = {}
    for row in candidates:
        if row["rater_id"]:
            by_rater.setdefault(row["rater_id"], set()).add(row["client_submission_id"])
        else:
            by_origin.setdefault(row["origin"], set()).add(row["client_submission_id"])
    stored = Judgement.objects.values_list("client_submission_id", flat=True)
    for rater_id, keys in by_rater.items():
        for chunk in _chunks(sorted(keys)):
            found = stored.filter(rater_id=rater_id, client_submission_id__in=chunk)
            seen.update(("rater", rater_id, key) for key in found)
    for origin, keys in by_origin.items():
        for chunk in _chunks(sorted(keys)):
            found = stored.filter(rater__isnull=True, origin=origin, client_submission_id__in=chunk)
            seen.update(("origin", origin, key) for key in found)
    for chunk in _chunks(sorted({row["task_id"] for row in candidates if row["rater_id"]})):
        seen.update(
            ("task", rater_id, task_id)
            for rater_id, task_id in Judgement.objects.filter(task_id__in=chunk, rater__isnull=False).values_list(
                "rater_id", "task_id"
            )
        )
    return seen


def _import_demonstrations(state: _Import, paired: list[tuple], origin: str) -> None:
    """The items' demonstrations, keyed by (prompt id, text), new ones only."""
    demonstrations: set[tuple[int, str]] = set(
        _existing_for_prompts(
            Demonstration,
            {prompt_id for item, prompt_id in paired if item.demonstration} & state.earlier,
            ("prompt_id", "text"),
        )
    )
    new_demonstrations = []
    for item, prompt_id in paired:
        if item.demonstration is None:
            continue
        if (prompt_id, item.demonstration) in demonstrations:
            state.skipped["demonstrations"] += 1
            continue
        demonstrations.add((prompt_id, item.demonstration))
        new_demonstrations.append({"prompt_id": prompt_id, "text": item.demonstration, "origin": origin})
    insert_rows(Demonstration, new_demonstrations)
    state.created["demonstrations"] += len(new_demonstrations)


def dataset_import_file(
    *,
    project: Project,
    source: IO[bytes],
    name: str,
    file_format: str = "auto",
    kind: str = "auto",
    origin: str = "",
    response_origin: str = "imported",
    skip_invalid: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Read, check and import a whole file (JSONL, CSV or Parquet) in one transaction, streaming it: records
    are parsed and written a batch at a time, so memory does not grow with the file. A bad record stops the
    import with an error that names its line and field, and nothing is written; with ``skip_invalid`` the
    records that do not parse are left out instead, counted in ``skipped["invalid records"]`` and listed
    (the first hundred, by line) in the result. A file that is not JSONL, CSV or Parquet at all
    still stops the import."""
    from labeling import importers

    file_format = importers.file_format_for(name, file_format)
    records = importers.read_records(source, file_format)
    invalid = importers.Invalid() if skip_invalid else None
    result = dataset_import(
        project=project,
        batches=importers.parse_batches(records, kind, IMPORT_BATCH, invalid),
        origin=origin or Path(name).name,
        response_origin=response_origin,
        progress=progress,
    )
    if invalid is not None and invalid.count:
        result.skipped["invalid records"] = invalid.count
        result.invalid = invalid.records
    return result
