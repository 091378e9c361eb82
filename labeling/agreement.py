"""How far a project's raters agree, vectorised over every ranking's places: Krippendorff's α (ordinal, over rank
positions), Kendall's τ-b between rankings of three or more responses, and pairwise agreement on two-response
tasks; per project, per rater and per week, each with a bootstrap interval that resamples tasks.

A unit of α is one response of one task; each judgement gives it a value, the place of the response in its
ranking (0 = first; tied responses share a place). α comes from the coincidence matrix of Krippendorff (2011),
"Computing Krippendorff's alpha-reliability", summed task by task so that a bootstrap replicate is a weighted
sum of the tasks' matrices; the tests check it against the ``krippendorff`` package on the same data.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

BOOTSTRAP = 200  # replicates for the project's and the weeks' intervals
RATER_BOOTSTRAP = 100  # replicates for each rater's
SEED = 20261207


@dataclass
class Places:
    """One entry per (judgement, response): who judged, which task, which response, its place, and the week."""

    judgement: np.ndarray
    rater: np.ndarray
    task: np.ndarray
    response: np.ndarray
    place: np.ndarray
    week: np.ndarray


@dataclass
class Inputs:
    """What the figures need, as the database can give it compactly.

    ``units``: one row per (task, response, place) with how many judgements put the response there (task,
    response, place, count columns). ``rater``, ``task``, ``week``: one entry per judgement. ``wide``: every
    place of the judgements on tasks of three or more responses (for τ-b).
    """

    units: np.ndarray
    rater: np.ndarray
    task: np.ndarray
    week: np.ndarray
    wide: Places
    # Per judgement, on two-response tasks: others of the task who chose the same response, and others
    # (labeling.audit.pairwise_counts); None: no pairwise figures.
    same: np.ndarray | None = None
    others: np.ndarray | None = None

    @classmethod
    def from_places(cls, places: Places) -> "Inputs":
        """The same inputs from every place of every judgement (what the database sums for a big project)."""
        keys = np.stack([places.task, places.response, places.place.astype(np.int64)], axis=1)
        units, counts = np.unique(keys, axis=0, return_counts=True)
        _, first, judgement_of = np.unique(places.judgement, return_index=True, return_inverse=True)
        wide = np.bincount(judgement_of)[judgement_of] >= 3
        return cls(
            units=np.column_stack([units, counts]),
            rater=places.rater[first],
            task=places.task[first],
            week=places.week[first].astype(np.int64),
            wide=Places(*(getattr(places, name)[wide] for name in Places.__dataclass_fields__)),
        )


def distances(n_v: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's squared distances between values 0..V-1 given how often each was given (``n_v``)."""
    size = len(n_v)
    if level == "nominal":
        return 1.0 - np.eye(size)
    low = np.minimum.outer(np.arange(size), np.arange(size))
    high = np.maximum.outer(np.arange(size), np.arange(size))
    cumulative = np.concatenate([[0.0], np.cumsum(n_v)])
    between = cumulative[high + 1] - cumulative[low]
    return (between - (n_v[low] + n_v[high]) / 2.0) ** 2


def alpha_from_coincidences(coincidences: np.ndarray, level: str = "ordinal") -> float | None:
    """α from a coincidence matrix (V × V); None when there is nothing to compare or no variation at all."""
    n_v = coincidences.sum(axis=0)
    n = n_v.sum()
    if n <= 1:
        return None
    expected = (np.outer(n_v, n_v) - np.diag(n_v)) / (n - 1)
    d = distances(n_v, level)
    disagreement_expected = (expected * d).sum()
    if disagreement_expected <= 0:
        return None
    return float(1.0 - (coincidences * d).sum() / disagreement_expected)


def unit_value_counts(units: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit ids, counts): how often each unit got each value 0..size-1."""
    unit_ids, unit_of = np.unique(units, return_inverse=True)
    counts = np.bincount(unit_of * size + values, minlength=len(unit_ids) * size).reshape(len(unit_ids), size)
    return unit_ids, counts


def coincidences_by_group(counts: np.ndarray, groups: np.ndarray, group_count: int, chunk: int = 50_000) -> np.ndarray:
    """Each group's coincidence matrix (group_count × V × V): the sum over its units of
    (m mᵀ - diag m) / (n - 1), m being the unit's value counts and n their sum (units with one value add nothing)."""
    size = counts.shape[1]
    total = np.zeros((group_count, size, size))
    for start in range(0, len(counts), chunk):
        m = counts[start : start + chunk].astype(np.float64)
        pairable = m.sum(axis=1)
        keep = pairable > 1
        m, pairable, owner = m[keep], pairable[keep], groups[start : start + chunk][keep]
        per_unit = (m[:, :, None] * m[:, None, :] - m[:, :, None] * np.eye(size)[None]) / (pairable - 1)[:, None, None]
        np.add.at(total, owner, per_unit)
    return total


def interval(replicates: np.ndarray) -> tuple[float | None, float | None]:
    known = replicates[~np.isnan(replicates)]
    if len(known) < 10:
        return None, None
    low, high = np.percentile(known, [2.5, 97.5])
    return float(low), float(high)


def figure(value: float | None, replicates: np.ndarray, count: int) -> dict:
    low, high = interval(replicates) if value is not None else (None, None)
    return {"value": value, "low": low, "high": high, "n": int(count)}


def _alpha_replicates(by_task: np.ndarray, rng: np.random.Generator, rounds: int) -> np.ndarray:
    """α of ``rounds`` bootstrap samples of the tasks (resampled with replacement)."""
    tasks = len(by_task)
    flat = by_task.reshape(tasks, -1)
    values = np.full(rounds, np.nan)
    for number in range(rounds):
        weights = np.bincount(rng.integers(0, tasks, tasks), minlength=tasks).astype(np.float64)
        result = alpha_from_coincidences((weights @ flat).reshape(by_task.shape[1:]))
        values[number] = np.nan if result is None else result
    return values


def _mean_replicates(sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator, rounds: int) -> np.ndarray:
    """The ratio of sums to counts over ``rounds`` bootstrap samples of the groups (tasks)."""
    groups = len(sums)
    values = np.full(rounds, np.nan)
    for number in range(rounds):
        weights = np.bincount(rng.integers(0, groups, groups), minlength=groups).astype(np.float64)
        total = weights @ counts
        values[number] = (weights @ sums) / total if total else np.nan
    return values


def _grouped_mean_replicates(groups: np.ndarray, values: np.ndarray, size: int, rng, rounds: int) -> np.ndarray:
    """Per group 0..size-1, the mean of its values over ``rounds`` resamples of its own values (rounds × size)."""
    order = np.argsort(groups, kind="stable")
    groups, values = groups[order], values[order]
    starts = np.searchsorted(groups, np.arange(size))
    counts = np.bincount(groups, minlength=size)
    result = np.full((rounds, size), np.nan)
    if not len(values):
        return result
    for number in range(rounds):
        picks = starts[groups] + np.floor(rng.random(len(groups)) * counts[groups]).astype(np.int64)
        sums = np.bincount(groups, weights=values[picks], minlength=size)
        result[number] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return result


def _tau_pairs(places: Places) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kendall's τ-b for every two judgements of the same task with three or more responses:
    (task, first judge, second judge, τ-b) arrays, one entry per pair of judgements."""
    if not len(places.judgement):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros(0)
    _, judgement_of = np.unique(places.judgement, return_inverse=True)
    # Each judgement's places, responses in id order, as a row (at most 9 responses; missing ones NaN).
    order = np.lexsort((places.response, judgement_of))
    rows_of = judgement_of[order]
    row_ids, row_index = np.unique(rows_of, return_inverse=True)
    column = np.arange(len(rows_of)) - np.searchsorted(rows_of, rows_of)
    width = int(column.max()) + 1
    matrix = np.full((len(row_ids), width), np.nan)
    matrix[row_index, column] = places.place[order]
    first_of_row = np.searchsorted(rows_of, row_ids)
    task = places.task[order][first_of_row]
    rater = places.rater[order][first_of_row]
    a, b = np.triu_indices(width, 1)
    signs = np.sign(matrix[:, a] - matrix[:, b])  # NaN where a response is missing
    signs = np.nan_to_num(signs)
    untied = np.abs(signs).sum(axis=1)
    by_task = np.argsort(task, kind="stable")
    task, rater, signs, untied = task[by_task], rater[by_task], signs[by_task], untied[by_task]
    firsts, seconds, taus, tasks = [], [], [], []
    for offset in range(1, len(task)):
        same = task[offset:] == task[:-offset]
        if not same.any():
            break
        left, right = np.nonzero(same)[0], np.nonzero(same)[0] + offset
        denominator = np.sqrt(untied[left] * untied[right])
        tau = np.where(
            denominator > 0, (signs[left] * signs[right]).sum(axis=1) / np.maximum(denominator, 1e-12), np.nan
        )
        firsts.append(rater[left])
        seconds.append(rater[right])
        taus.append(tau)
        tasks.append(task[left])
    known = np.concatenate(taus) if taus else np.zeros(0)
    keep = ~np.isnan(known)
    stack = (np.concatenate(part)[keep] if part else np.zeros(0, np.int64) for part in (tasks, firsts, seconds))
    task_pairs, first_pairs, second_pairs = stack
    return task_pairs, first_pairs, second_pairs, known[keep]


def _pairwise(project: dict, inputs: Inputs, tasks, task_of, task_week, rng) -> None:
    """Pairwise agreement on two-response tasks (the share of pairs of judgements of a task that chose the same
    response), overall and for each week in ``project["weeks"]``, with intervals resampling tasks."""
    assert inputs.same is not None and inputs.others is not None
    same = np.bincount(task_of, weights=inputs.same, minlength=len(tasks))
    others = np.bincount(task_of, weights=inputs.others, minlength=len(tasks))
    total = others.sum()
    project["pairwise"] = figure(
        float(same.sum() / total) if total else None,
        _mean_replicates(same, others, rng, BOOTSTRAP) if total else np.zeros(0),
        int(total // 2),
    )
    for week in project["weeks"]:
        members = task_week == week["week"]
        week_total = others[members].sum()
        week["pairwise"] = figure(
            float(same[members].sum() / week_total) if week_total else None,
            _mean_replicates(same[members], others[members], rng, BOOTSTRAP) if week_total else np.zeros(0),
            int(week_total // 2),
        )


def rater_pairwise(inputs: Inputs, raters: np.ndarray, rng, rounds: int = RATER_BOOTSTRAP) -> dict[int, dict]:
    """Each rater's pairwise agreement with the others of their two-response tasks, with an interval that
    resamples the rater's judgements."""
    assert inputs.same is not None and inputs.others is not None
    index = np.searchsorted(raters, inputs.rater)
    same = np.bincount(index, weights=inputs.same, minlength=len(raters))
    others = np.bincount(index, weights=inputs.others, minlength=len(raters))
    order = np.argsort(index, kind="stable")
    grouped, same_sorted, others_sorted = index[order], inputs.same[order], inputs.others[order]
    starts = np.searchsorted(grouped, np.arange(len(raters)))
    counts = np.bincount(grouped, minlength=len(raters))
    replicates = np.full((rounds, len(raters)), np.nan)
    if len(grouped):
        for number in range(rounds):
            picks = starts[grouped] + np.floor(rng.random(len(grouped)) * counts[grouped]).astype(np.int64)
            agreed = np.bincount(grouped, weights=same_sorted[picks], minlength=len(raters))
            total = np.bincount(grouped, weights=others_sorted[picks], minlength=len(raters))
            replicates[number] = np.where(total > 0, agreed / np.maximum(total, 1), np.nan)
    return {
        int(rater): figure(float(same[position] / others[position]) if others[position] else None,
                           replicates[:, position], int(others[position]))
        for position, rater in enumerate(raters.tolist())
    }  # fmt: skip


def agreement(inputs: Inputs, *, weeks: int = 12, seed: int = SEED) -> tuple[dict, dict[int, dict]]:
    """(the project's figures with a ``weeks`` list, rater id to their figures). α per rater is over the tasks
    the rater judged (every rater's values on them); τ-b per rater is the mean over their pairs of judgements."""
    rng = np.random.default_rng(seed)
    empty = {"alpha": figure(None, np.zeros(0), 0), "kendall_tau_b": figure(None, np.zeros(0), 0)}
    if not len(inputs.units):
        return {**empty, "weeks": []}, {}
    unit_rows = inputs.units
    size = int(unit_rows[:, 2].max()) + 1
    tasks = np.unique(unit_rows[:, 0])
    unit_keys, unit_of = np.unique((unit_rows[:, 0] << 32) | unit_rows[:, 1], return_inverse=True)
    counts = np.bincount(
        unit_of * size + unit_rows[:, 2], weights=unit_rows[:, 3], minlength=len(unit_keys) * size
    ).reshape(len(unit_keys), size)
    unit_task = np.searchsorted(tasks, unit_keys >> 32)
    del unit_keys, unit_of
    task_of = np.searchsorted(tasks, inputs.task)
    by_task = coincidences_by_group(counts, unit_task, len(tasks))
    pairable = (counts.sum(axis=1) > 1).sum()

    total = by_task.sum(axis=0)
    project: dict[str, Any] = {
        "alpha": figure(alpha_from_coincidences(total), _alpha_replicates(by_task, rng, BOOTSTRAP), pairable)
    }

    task_pairs, first_pairs, second_pairs, taus = _tau_pairs(inputs.wide)
    pair_task = np.searchsorted(tasks, task_pairs)
    tau_sums = np.bincount(pair_task, weights=taus, minlength=len(tasks))
    tau_counts = np.bincount(pair_task, minlength=len(tasks)).astype(np.float64)
    tau_mean = float(taus.mean()) if len(taus) else None
    tau_replicates = _mean_replicates(tau_sums, tau_counts, rng, BOOTSTRAP) if len(taus) else np.zeros(0)
    project["kendall_tau_b"] = figure(tau_mean, tau_replicates, len(taus))

    # Weeks: a task belongs to the week of its first judgement.
    task_week = np.full(len(tasks), np.iinfo(np.int64).max)
    np.minimum.at(task_week, task_of, inputs.week)
    project["weeks"] = []
    for week in np.unique(task_week)[-weeks:].tolist():
        members = task_week == week
        week_tau = tau_counts[members].sum()
        project["weeks"].append(
            {
                "week": int(week),
                "tasks": int(members.sum()),
                "alpha": figure(
                    alpha_from_coincidences(by_task[members].sum(axis=0)),
                    _alpha_replicates(by_task[members], rng, BOOTSTRAP),
                    int((counts[members[unit_task]].sum(axis=1) > 1).sum()),
                ),
                "kendall_tau_b": figure(
                    float(tau_sums[members].sum() / week_tau) if week_tau else None,
                    _mean_replicates(tau_sums[members], tau_counts[members], rng, BOOTSTRAP)
                    if week_tau
                    else np.zeros(0),
                    int(week_tau),
                ),
            }
        )

    if inputs.same is not None and inputs.others is not None:
        _pairwise(project, inputs, tasks, task_of, task_week, rng)

    # Raters: α over the tasks each judged, from a rater × task incidence matrix.
    raters, rater_of = np.unique(inputs.rater, return_inverse=True)
    judged = np.unique(rater_of * len(tasks) + task_of)  # each (rater, task) once, however many responses
    del rater_of, task_of
    incidence = sparse.csr_matrix(
        (np.ones(len(judged)), (judged // len(tasks), judged % len(tasks))), shape=(len(raters), len(tasks))
    )
    flat = by_task.reshape(len(tasks), -1)
    rater_totals = incidence @ flat
    rater_alpha_replicates = np.full((RATER_BOOTSTRAP, len(raters)), np.nan)
    for number in range(RATER_BOOTSTRAP):
        weights = np.bincount(rng.integers(0, len(tasks), len(tasks)), minlength=len(tasks)).astype(np.float64)
        sampled = incidence @ (flat * weights[:, None])
        for index in range(len(raters)):
            result = alpha_from_coincidences(sampled[index].reshape(size, size))
            rater_alpha_replicates[number, index] = np.nan if result is None else result
    pair_raters = np.concatenate([first_pairs, second_pairs])
    pair_taus = np.concatenate([taus, taus])
    pair_index = np.searchsorted(raters, pair_raters)
    tau_replicates_by_rater = _grouped_mean_replicates(pair_index, pair_taus, len(raters), rng, RATER_BOOTSTRAP)
    tau_counts_by_rater = np.bincount(pair_index, minlength=len(raters))
    tau_sums_by_rater = np.bincount(pair_index, weights=pair_taus, minlength=len(raters))
    pairwise = rater_pairwise(inputs, raters, rng) if inputs.same is not None else {}
    by_rater = {}
    for index, rater in enumerate(raters.tolist()):
        tau_count = int(tau_counts_by_rater[index])
        by_rater[rater] = {
            "alpha": figure(
                alpha_from_coincidences(rater_totals[index].reshape(size, size)),
                rater_alpha_replicates[:, index],
                int(incidence[index].sum()),
            ),
            "kendall_tau_b": figure(
                float(tau_sums_by_rater[index] / tau_count) if tau_count else None,
                tau_replicates_by_rater[:, index],
                tau_count,
            ),
            "pairwise": pairwise.get(rater, figure(None, np.zeros(0), 0)),
        }
    return project, by_rater
