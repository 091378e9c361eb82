"""How far a rater's judgement can be trusted: the pure arithmetic (no database), used by the services that
score gold tasks, pause raters and audit a project's raters (the audit's vectorised part: labeling.audit)."""

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def _places(ranking: Sequence[Sequence[int]]) -> dict[int, int]:
    """Response id to the index of its group (0 = best); tied responses share an index."""
    return {response_id: place for place, group in enumerate(ranking) for response_id in group}


def gold_score(ranking: Sequence[Sequence[int]], expected: Sequence[Sequence[int]]) -> float | None:
    """How closely ``ranking`` follows a gold task's ``expected`` ranking, from 0 to 1.

    Every pair of the task's responses counts once: 1 when both rankings order it the same way (or both tie
    it), a half when one of them ties it and the other does not, 0 when they order it opposite ways. The score
    is the mean over the pairs; None when the task has fewer than two responses.
    """
    given, wanted = _places(ranking), _places(expected)
    ids = sorted(wanted)
    total = 0.0
    pairs = 0
    for index, first in enumerate(ids):
        for second in ids[index + 1 :]:
            if first not in given or second not in given:
                continue
            a = (wanted[first] > wanted[second]) - (wanted[first] < wanted[second])
            b = (given[first] > given[second]) - (given[first] < given[second])
            total += 1.0 if a == b else 0.5 if a == 0 or b == 0 else 0.0
            pairs += 1
    return total / pairs if pairs else None


def wilson_interval(mean: float, count: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``mean`` seen over ``count`` trials (95% by default).

    A mean gold score is a proportion of pairs ordered as expected, averaged over ``count`` gold judgements:
    the interval treats each judgement as one trial, so it is wide for a rater with few gold tasks and narrows
    as they do more. ``(0, 1)`` when there is nothing yet.
    """
    if count <= 0:
        return 0.0, 1.0
    mean = min(max(mean, 0.0), 1.0)
    z2 = z * z
    centre = (mean + z2 / (2 * count)) / (1 + z2 / count)
    half = z / (1 + z2 / count) * math.sqrt(mean * (1 - mean) / count + z2 / (4 * count * count))
    return max(centre - half, 0.0), min(centre + half, 1.0)


# --- the rater audit's rules ------------------------------------------------------------------------------------

# The audit's rules: a rater is flagged when a figure crosses its threshold, once they have enough judgements
# for the figure to mean something. A project may override any of them (``Project.audit_rules``).
AUDIT_RULES = {
    "min_judgements": 20,  # compare tasks (or tasks with a consensus) before a bias or agreement rule applies
    "position_share": 0.65,  # chose the response shown first at least this often ...
    "position_p": 0.001,  # ... and a binomial test against 0.5 gives a p-value under this
    "length_excess": 0.2,  # chose the longer response this much more often than the project's raters do ...
    "length_p": 0.001,  # ... and a binomial test against the project's share gives a p-value under this
    "consensus_min": 0.6,  # agrees with the majority of the other raters on a task less often than this
    "fast_share": 0.5,  # submitted faster than the text can be read at least this often
    "reading_chars_per_second": 50.0,  # a quick skim (about 600 words a minute): faster is not reading
}


def audit_rules(overrides: dict | None) -> dict:
    """The audit's rules with a project's overrides; ValueError names an unknown rule or a value that is not a
    number of at least 0."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ValueError('Give the audit rules as an object of names and numbers, such as {"consensus_min": 0.5}.')
    unknown = sorted(set(overrides) - set(AUDIT_RULES))
    if unknown:
        raise ValueError(f"Unknown audit rules: {', '.join(unknown)}. Known: {', '.join(AUDIT_RULES)}.")
    for name, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise ValueError(f"The audit rule {name} must be a number of at least 0, not {value!r}.")
    return {**AUDIT_RULES, **{name: float(value) for name, value in overrides.items()}}
