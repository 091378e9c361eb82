"""Checks on the JSON that judgements, prompts and tasks carry.

Each function raises ``django.core.exceptions.ValidationError`` with a message a rater or an admin can act
on. Models call them from ``clean()``; services call ``full_clean()`` before every write.
"""

from collections.abc import Iterable, Mapping

from django.core.exceptions import ValidationError

ROLES = ("system", "user", "assistant")
LIKERT_MIN, LIKERT_MAX = 1, 7
K_MIN, K_MAX = 2, 9
# The largest id a row can have (a signed 64-bit integer, on PostgreSQL and SQLite): a larger one names no row,
# and neither database takes it as a parameter.
ID_MAX = 2**63 - 1

# The API's bounds on free text and collections (the OpenAPI schema states each); bodies are also capped at
# Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) and imports at IMPORT_MAX_BYTES.
TEXT_MAX = 100_000  # characters of one message, response, demonstration or guidelines
MESSAGES_MAX = 200  # messages in one conversation
METADATA_MAX = 20_000  # characters of a metadata object written as JSON
NAMES_MAX = 100  # usernames in one filter


def validate_metadata_size(metadata: object) -> None:
    """Metadata is free-form JSON, within ``METADATA_MAX`` characters."""
    import json

    size = len(json.dumps(metadata, ensure_ascii=False, default=str))
    if size > METADATA_MAX:
        raise ValidationError(f"Metadata takes {size:,} characters as JSON; at most {METADATA_MAX:,}.")


def validate_messages(messages: object) -> None:
    """A conversation is a non-empty list of ``{"role", "content"}`` ending with a user turn."""
    if not isinstance(messages, list) or not messages:
        raise ValidationError("A prompt needs a non-empty list of messages.")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValidationError(f"Message {index} must be an object with exactly 'role' and 'content'.")
        if message["role"] not in ROLES:
            raise ValidationError(f"Message {index} has role {message['role']!r}; expected one of {', '.join(ROLES)}.")
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise ValidationError(f"Message {index} has empty content.")
    if messages[-1]["role"] != "user":
        raise ValidationError("The last message of a prompt must come from the user.")


def validate_response_count(count: int) -> None:
    if not K_MIN <= count <= K_MAX:
        raise ValidationError(f"A task holds between {K_MIN} and {K_MAX} responses, not {count}.")


# How much better the winner is: the workbench offers 1 (better), 2 and 3 (much better). Imports may carry
# fractions (TRL's margins) and 0 (an export's "unknown"); nothing above 3, so that no one judgement can
# outweigh the rest of the reward model's loss.
MARGIN_MIN, MARGIN_MAX = 1.0, 3.0


def validate_ranking(ranking: object, response_ids: Iterable[int]) -> list[list[int]]:
    """A ranking is an ordered list of groups (best first); responses in one group are tied.

    Together the groups must name every response of the task exactly once, and nothing else. Returns the
    ranking, checked.
    """
    expected = set(response_ids)
    if not isinstance(ranking, list) or not ranking:
        raise ValidationError("The ranking must be a non-empty list of groups of response ids.")
    seen: set[int] = set()
    for index, group in enumerate(ranking):
        if not isinstance(group, list) or not group:
            raise ValidationError(f"Group {index} of the ranking must be a non-empty list of response ids.")
        for response_id in group:
            if not isinstance(response_id, int) or isinstance(response_id, bool):
                raise ValidationError(f"Group {index} of the ranking holds {response_id!r}, not a response id.")
            if response_id in seen:
                raise ValidationError(f"Response {response_id} appears more than once in the ranking.")
            seen.add(response_id)
    foreign = seen - expected
    if foreign:
        raise ValidationError(f"The ranking names responses that are not part of this task: {sorted(foreign)}.")
    missing = expected - seen
    if missing:
        raise ValidationError(f"The ranking leaves out responses of this task: {sorted(missing)}.")
    return ranking


def _response_keyed(mapping: object, response_ids: set[int], what: str) -> dict[int, object]:
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"{what} must be an object keyed by response id.")
    keyed = {}
    for key, value in mapping.items():
        try:
            response_id = int(key)
        except (TypeError, ValueError):
            raise ValidationError(f"{what} has key {key!r}, which is not a response id.") from None
        if response_id not in response_ids:
            raise ValidationError(f"{what} names response {response_id}, which is not part of this task.")
        keyed[response_id] = value
    return keyed


def validate_likert(likert: object, response_ids: Iterable[int]) -> None:
    """Likert scores are ``{response_id: 1..7}``; responses may be left unscored."""
    for response_id, score in _response_keyed(likert, set(response_ids), "Likert scores").items():
        if not isinstance(score, int) or isinstance(score, bool) or not LIKERT_MIN <= score <= LIKERT_MAX:
            raise ValidationError(
                f"The Likert score of response {response_id} is {score!r}; "
                f"it must be a whole number from {LIKERT_MIN} to {LIKERT_MAX}."
            )


def validate_flags(flags: object, response_ids: Iterable[int], known: Iterable[str]) -> None:
    """Flags are ``{response_id: [flag, ...]}`` drawn from the known set, each at most once."""
    known = set(known)
    for response_id, names in _response_keyed(flags, set(response_ids), "Flags").items():
        if not isinstance(names, list):
            raise ValidationError(f"The flags of response {response_id} must be a list.")
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValidationError(
                f"Unknown flag {unknown[0]!r} on response {response_id}; known flags: {', '.join(sorted(known))}."
            )
        if len(set(names)) != len(names):
            raise ValidationError(f"A flag is repeated on response {response_id}.")


def validate_shown_order(order: object, response_ids: Iterable[int]) -> None:
    """The order responses were shown in is a permutation of the task's responses (or empty: unknown)."""
    if order == []:
        return
    if (
        not isinstance(order, list)
        or not all(isinstance(item, int) for item in order)
        or sorted(order) != sorted(response_ids)
    ):
        raise ValidationError("The order shown must list each response of the task exactly once.")


def validate_probability(probability: float | None) -> None:
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise ValidationError(f"A preference probability lies between 0 and 1, not {probability}.")


NUL_PROBLEM = "contains a NUL character, which cannot be stored."  # after the field's name or a line's


def nul_path(value, path: str = "") -> str | None:
    """Where in a parsed JSON value a NUL character sits (``messages[0].content``), or None; keys count too."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "(the body)"
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{where}.{key}" if where else str(key)
                if "\x00" in str(key):
                    return name
                stack.append((inner, name))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{index}]") for index, inner in enumerate(item))
    return None
