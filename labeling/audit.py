"""A project's raters audited together, vectorised: one pass of numpy over every human judgement gives each rater's
biases, speed, agreement and gold record, and the flags its rules raise (labeling.quality.AUDIT_RULES)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from labeling.quality import Z_95


@dataclass
class JudgementColumns:
    """Every human judgement of a project with a rater, one entry per judgement in each array.

    ``winner`` is the response placed first when the judgement orders a two-response task strictly (-1 for a
    tie, "all bad" or a larger task); ``first_shown`` the response shown first; ``longer`` the longer of the
    two responses (-1 when they are as long); ``chars`` the characters of the task's prompt and responses;
    ``gold`` the gold score (NaN off gold tasks); ``week`` the week of submission (days since 1970 // 7).
    """

    rater: np.ndarray
    task: np.ndarray
    winner: np.ndarray
    first_shown: np.ndarray
    longer: np.ndarray
    tie: np.ndarray
    all_bad: np.ndarray
    seconds: np.ndarray
    chars: np.ndarray
    gold: np.ndarray
    week: np.ndarray

    @classmethod
    def empty(cls) -> "JudgementColumns":
        ints, flags, floats = (np.zeros(0, dtype) for dtype in (np.int64, bool, np.float64))
        return cls(ints, ints, ints, ints, ints, flags, flags, floats, floats, floats, ints)

    @classmethod
    def concatenate(cls, parts: "list[JudgementColumns]") -> "JudgementColumns":
        if not parts:
            return cls.empty()
        return cls(**{name: np.concatenate([getattr(part, name) for part in parts]) for name in cls.__annotations__})


def _two_sided_binomial_p(successes: np.ndarray, trials: np.ndarray, share: float | np.ndarray) -> np.ndarray:
    """The two-sided p-value of ``successes`` in ``trials`` under a success probability ``share`` (twice the
    smaller tail, at most 1); 1 where there are no trials."""
    lower = stats.binom.cdf(successes, trials, share)
    upper = stats.binom.sf(successes - 1, trials, share)
    p = np.minimum(1.0, 2.0 * np.minimum(lower, upper))
    return np.where(trials > 0, p, 1.0)


def wilson_intervals(means: np.ndarray, counts: np.ndarray, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """``wilson_interval`` for arrays; (0, 1) where the count is 0."""
    n = np.maximum(counts, 1).astype(np.float64)
    p = np.clip(np.nan_to_num(means), 0.0, 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low, high = np.maximum(centre - half, 0.0), np.minimum(centre + half, 1.0)
    return np.where(counts > 0, low, 0.0), np.where(counts > 0, high, 1.0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _medians(groups: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """The median of ``values`` within each group 0..size-1 (NaN values left out; NaN for an empty group)."""
    known = ~np.isnan(values)
    groups, values = groups[known], values[known]
    order = np.lexsort((values, groups))
    groups, values = groups[order], values[order]
    starts = np.searchsorted(groups, np.arange(size), side="left")
    ends = np.searchsorted(groups, np.arange(size), side="right")
    counts = ends - starts
    lower = np.clip(starts + (counts - 1) // 2, 0, max(len(values) - 1, 0))
    upper = np.clip(starts + counts // 2, 0, max(len(values) - 1, 0))
    if not len(values):
        return np.full(size, np.nan)
    return np.where(counts > 0, (values[lower] + values[upper]) / 2.0, np.nan)


def pairwise_counts(columns: JudgementColumns) -> tuple[np.ndarray, np.ndarray]:
    """For each judgement that orders a two-response task strictly: how many of the task's other such
    judgements chose the same response, and how many there are (0 and 0 for every other judgement)."""
    compare = columns.winner >= 0
    same = np.zeros(len(columns.winner))
    others = np.zeros(len(columns.winner))
    pair_keys = (columns.task[compare] << 32) | columns.winner[compare]  # ids below 2**31: one int64 per pair
    _, pair_of, pair_counts = np.unique(pair_keys, return_inverse=True, return_counts=True)
    _, task_of, task_counts = np.unique(columns.task[compare], return_inverse=True, return_counts=True)
    same[compare] = pair_counts[pair_of.ravel()] - 1
    others[compare] = task_counts[task_of.ravel()] - 1
    return same, others


def rater_audit(columns: JudgementColumns, rules: dict, *, weeks: int = 12) -> dict[int, dict]:
    """Each rater's figures and flags, from every human judgement of the project: rater id to a dict.

    Position bias: the share of two-response tasks where the rater put first the response shown first, with a
    binomial test against 0.5. Length bias: the share where they chose the longer response, against the share
    of all the project's raters. Speed: the median seconds, and the share submitted faster than the task's text
    can be read at ``reading_chars_per_second``. Agreement: with each other rater who judged the same
    two-response task (pairwise), and with the majority of the others on it when there is one (leave-one-out
    consensus). Gold: count, mean score and its 95% Wilson interval. ``weekly``: judgements and mean gold score
    in each of the last ``weeks`` weeks that have any.
    """
    if not len(columns.rater):
        return {}
    raters, who = np.unique(columns.rater, return_inverse=True)
    size = len(raters)

    def per_rater(weights=None, where=None) -> np.ndarray:
        values = np.ones(len(who)) if weights is None else np.asarray(weights, dtype=np.float64)
        if where is not None:
            values = np.where(where, values, 0.0)
        return np.bincount(who, weights=values, minlength=size)

    judged = per_rater()
    compare = columns.winner >= 0
    compared = per_rater(where=compare)
    first = per_rater(where=compare & (columns.winner == columns.first_shown))
    position_share = _ratio(first, compared)
    position_p = _two_sided_binomial_p(first, compared, 0.5)

    sized = compare & (columns.longer >= 0)
    sized_count = per_rater(where=sized)
    longer = per_rater(where=sized & (columns.winner == columns.longer))
    project_longer = longer.sum() / sized_count.sum() if sized_count.sum() else 0.5
    length_share = _ratio(longer, sized_count)
    length_p = _two_sided_binomial_p(longer, sized_count, min(max(project_longer, 1e-6), 1 - 1e-6))

    same_all, others_all = pairwise_counts(columns)
    same, others = same_all[compare], others_all[compare]
    differ = others - same
    compare_who = who[compare]
    pairwise_agreed = np.bincount(compare_who, weights=same, minlength=size)
    pairwise_total = np.bincount(compare_who, weights=others, minlength=size)
    has_majority = same != differ
    consensus_total = np.bincount(compare_who, weights=has_majority.astype(np.float64), minlength=size)
    sided = (has_majority & (same > differ)).astype(np.float64)
    consensus_agreed = np.bincount(compare_who, weights=sided, minlength=size)

    fast = columns.seconds < columns.chars / rules["reading_chars_per_second"]
    timed = ~np.isnan(columns.seconds)
    fast_share = _ratio(per_rater(where=fast & timed), per_rater(where=timed))
    median_seconds = _medians(who, columns.seconds, size)

    scored = ~np.isnan(columns.gold)
    gold_count = per_rater(where=scored)
    gold_mean = _ratio(per_rater(np.nan_to_num(columns.gold), where=scored), gold_count)
    gold_low, gold_high = wilson_intervals(gold_mean, gold_count)

    weekly = _weekly(who, columns.week, columns.gold, size, weeks)
    enough = rules["min_judgements"]
    tie_rate = per_rater(where=columns.tie) / judged
    all_bad_rate = per_rater(where=columns.all_bad) / judged
    pairwise = _ratio(pairwise_agreed, pairwise_total)
    consensus = _ratio(consensus_agreed, consensus_total)
    figures = {}
    for index, rater in enumerate(raters.tolist()):
        row: dict[str, Any] = {
            "judgements": int(judged[index]),
            "compared": int(compared[index]),
            "position_share": _number(position_share[index]),
            "position_p": float(position_p[index]),
            "length_share": _number(length_share[index]),
            "length_p": float(length_p[index]),
            "project_length_share": float(project_longer),
            "median_seconds": _number(median_seconds[index]),
            "fast_share": _number(fast_share[index]),
            "tie_rate": float(tie_rate[index]),
            "all_bad_rate": float(all_bad_rate[index]),
            "pairwise_agreement": _number(pairwise[index]),
            "pairwise_pairs": int(pairwise_total[index]),
            "consensus_agreement": _number(consensus[index]),
            "consensus_tasks": int(consensus_total[index]),
            "gold_count": int(gold_count[index]),
            "gold_mean": _number(gold_mean[index]),
            "gold_low": float(gold_low[index]),
            "gold_high": float(gold_high[index]),
            "weekly": weekly[index],
        }
        row["flags"] = _flags(row, rules, enough, sized_count[index])
        figures[rater] = row
    return figures


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _weekly(who: np.ndarray, week: np.ndarray, gold: np.ndarray, size: int, weeks: int) -> list[list[dict]]:
    """Per rater, their last ``weeks`` weeks with judgements: ``{"week", "judgements", "gold_mean"}``."""
    first_week = int(week.min())
    span = int(week.max()) - first_week + 1
    cells, cell_of, counts = np.unique(who * span + (week - first_week), return_inverse=True, return_counts=True)
    scored = ~np.isnan(gold)
    gold_counts = np.bincount(cell_of, weights=scored.astype(np.float64), minlength=len(cells))
    gold_sums = np.bincount(cell_of, weights=np.where(scored, gold, 0.0), minlength=len(cells))
    series: list[list[dict]] = [[] for _ in range(size)]
    for cell, count, gold_count, gold_sum in zip(
        cells.tolist(), counts.tolist(), gold_counts.tolist(), gold_sums.tolist(), strict=True
    ):
        rater, offset = divmod(cell, span)
        mean = gold_sum / gold_count if gold_count else None
        series[rater].append({"week": first_week + offset, "judgements": count, "gold_mean": mean})
    return [rows[-weeks:] for rows in series]


def _flags(row: dict, rules: dict, enough: float, sized: float) -> list[str]:
    """The rules the rater's figures break, each as a sentence that gives the figure and the threshold."""
    flags = []
    position = row["position_share"]
    biased = position is not None and position >= rules["position_share"] and row["position_p"] < rules["position_p"]
    if row["compared"] >= enough and biased:
        flags.append(
            f"Position bias: chose the response shown first in {position:.0%} of "
            f"{row['compared']} comparisons (rule: {rules['position_share']:.0%} or more, "
            f"p < {rules['position_p']:g}; p = {row['position_p']:.1e})."
        )
    if sized >= enough and row["length_share"] is not None:
        excess = row["length_share"] - row["project_length_share"]
        if abs(excess) >= rules["length_excess"] and row["length_p"] < rules["length_p"]:
            direction = "longer" if excess > 0 else "shorter"
            flags.append(
                f"Length bias: chose the longer response in {row['length_share']:.0%} of {int(sized)} comparisons "
                f"against {row['project_length_share']:.0%} for the project, {direction} by "
                f"{abs(excess):.0%} (rule: {rules['length_excess']:.0%} or more, p < {rules['length_p']:g})."
            )
    consensus = row["consensus_agreement"]
    if row["consensus_tasks"] >= enough and consensus is not None and consensus < rules["consensus_min"]:
        flags.append(
            f"Low agreement: sided with the other raters' majority on {consensus:.0%} of "
            f"{row['consensus_tasks']} tasks (rule: under {rules['consensus_min']:.0%})."
        )
    if row["judgements"] >= enough and row["fast_share"] is not None and row["fast_share"] >= rules["fast_share"]:
        flags.append(
            f"Too fast: {row['fast_share']:.0%} of submissions came quicker than the text can be read at "
            f"{rules['reading_chars_per_second']:g} characters a second (rule: {rules['fast_share']:.0%} or more)."
        )
    return flags


TRUST_GOLD_MIN = 5  # gold tasks before the gold score speaks for the rater
TRUST_AGREEMENT_MIN = 20  # tasks with a majority of others (or pairs of rankings) before agreement does
TRUST_CAP = 2.0


def trust_weights(figures: dict[int, dict]) -> dict[int, float]:
    """Each rater's weight in the data out, from how often they are right: their gold score when they have at
    least ``TRUST_GOLD_MIN`` gold tasks, else their agreement with the others' majority on two-response tasks,
    else (τ-b + 1) / 2 with the others on larger ones; 1.0 when none of these is known yet.

    A rater right with probability p deserves log(p / (1 - p)) in a vote (p taken between 0.5 and 0.95: a
    rater no better than chance weighs nothing); the weights are divided by the median of the raters with one,
    so that a typical rater weighs 1, and capped at ``TRUST_CAP``."""
    accuracy: dict[int, float] = {}
    for rater, row in figures.items():
        tau = (row.get("agreement") or {}).get("kendall_tau_b") or {}
        if row["gold_count"] >= TRUST_GOLD_MIN and row["gold_mean"] is not None:
            accuracy[rater] = row["gold_mean"]
        elif row["consensus_tasks"] >= TRUST_AGREEMENT_MIN and row["consensus_agreement"] is not None:
            accuracy[rater] = row["consensus_agreement"]
        elif tau.get("n", 0) >= TRUST_AGREEMENT_MIN and tau.get("value") is not None:
            accuracy[rater] = (tau["value"] + 1.0) / 2.0
    raw = {rater: float(np.log(p / (1 - p))) for rater, p in ((r, min(max(p, 0.5), 0.95)) for r, p in accuracy.items())}
    typical = float(np.median(list(raw.values()))) if raw else 0.0
    weights = {rater: 1.0 for rater in figures}
    for rater, value in raw.items():
        weights[rater] = min(value / typical, TRUST_CAP) if typical > 0 else (1.0 if value > 0 else 0.0)
    return weights
