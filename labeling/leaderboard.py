"""A leaderboard of model versions from pairwise comparisons, as Chatbot Arena computes one: Bradley-Terry
strengths fitted by maximum likelihood, 95% intervals from a bootstrap over judgements, each version's win rate
against a reference, and a length-controlled fit (the same model with a covariate for the difference in answer
length, as Arena's style control adds one per style feature).

The model: version ``i`` beats version ``j`` with probability ``sigmoid(s_i - s_j + g * z)``, where ``z`` is the
standardised relative length difference of the two answers (0 in the raw fit). A tie counts half a win each
way. The reference version's strength is 0, so a strength reads as log-odds of beating the reference. The fit
is Newton's method on the log-likelihood with a weak Gaussian prior (standard deviation 1 on each parameter,
scikit-learn's ``LogisticRegression(C=1, fit_intercept=False)``, which the tests check it against), which
keeps a version that won every comparison finite. Newton's method runs on every bootstrap resample at once,
so 200 resamples of thousands of comparisons take well under a second. Plain numpy and scipy: no Django.
"""

import csv
import io
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse
from scipy.stats import kendalltau

PRIOR = 1.0  # precision of the Gaussian prior on each parameter (scikit-learn's 1 / C)
RESAMPLES = 200
LEVEL = 0.95
NEWTON_STEPS = 50
TOLERANCE = 1e-9
RESAMPLE_BLOCK = 100  # bootstrap resamples fitted together: bounds memory at this many weights per comparison


@dataclass(frozen=True)
class Comparisons:
    """Pairwise outcomes, one per pair of answers by two different versions that one judgement ordered.

    ``score`` is 1 when ``a`` was preferred, 0 when ``b`` was, 0.5 for a tie. ``length`` is the relative
    length difference of the two answers, ``(len_a - len_b) / (len_a + len_b)``. ``group`` numbers the
    judgement each came from: a K-wise ranking gives several comparisons, resampled together."""

    names: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    length: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return int(self.a.size)

    @classmethod
    def from_rows(cls, names, rows) -> "Comparisons":
        """From ``(a, b, score, length, group)`` tuples, ``a`` and ``b`` indices into ``names``."""
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(
            names=tuple(names),
            a=table[:, 0].astype(np.int64),
            b=table[:, 1].astype(np.int64),
            score=table[:, 2],
            length=table[:, 3],
            group=np.unique(table[:, 4], return_inverse=True)[1].astype(np.int64),
        )


@dataclass(frozen=True)
class Standing:
    name: str
    comparisons: int
    rank: int | None = None  # 1 + the versions whose interval lies wholly above this one's
    strength: float | None = None  # None: not connected to the reference by any chain of comparisons
    interval: tuple[float, float] | None = None
    controlled: float | None = None  # length-controlled strength
    controlled_interval: tuple[float, float] | None = None
    win_rate: float | None = None  # against the reference, in their direct comparisons (ties half)
    win_interval: tuple[float, float] | None = None
    reference_comparisons: int = 0
    mean_length: float | None = None  # characters, over the answers in its comparisons


@dataclass(frozen=True)
class Leaderboard:
    reference: str | None
    standings: list[Standing]
    comparisons: int
    judgements: int
    resamples: int
    length_effect: float | None = None  # the fitted length coefficient (log-odds per standard deviation)
    length_interval: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "comparisons": self.comparisons,
            "judgements": self.judgements,
            "resamples": self.resamples,
            "level": LEVEL,
            "length_effect": self.length_effect,
            "length_interval": list(self.length_interval) if self.length_interval else None,
            "notes": self.notes,
            "standings": [
                {
                    "name": standing.name,
                    "rank": standing.rank,
                    "comparisons": standing.comparisons,
                    "strength": standing.strength,
                    "interval": list(standing.interval) if standing.interval else None,
                    "controlled": standing.controlled,
                    "controlled_interval": list(standing.controlled_interval) if standing.controlled_interval else None,
                    "win_rate": standing.win_rate,
                    "win_interval": list(standing.win_interval) if standing.win_interval else None,
                    "reference_comparisons": standing.reference_comparisons,
                    "mean_length": standing.mean_length,
                }
                for standing in self.standings
            ],
        }


# --- the fit ------------------------------------------------------------------------------------------------


def newton_fit(design: np.ndarray, target: np.ndarray, weights: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """Logistic regression without intercept and with an L2 prior, for each row of ``weights`` at once.

    ``design`` (n, p), ``target`` (n,) in [0, 1], ``weights`` (B, n) -> coefficients (B, p). Maximises
    ``sum_i w_i [y_i log p_i + (1 - y_i) log(1 - p_i)] - prior / 2 * |beta|^2`` with Newton steps (the
    objective is strictly concave, so they converge from zero)."""
    resamples, width = weights.shape[0], design.shape[1]
    beta = np.zeros((resamples, width))
    ridge = prior * np.eye(width)
    # Each row's outer product, flattened (n, p * p): the Hessian of every resample is then one matrix product.
    outer = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], width * width)
    for _ in range(NEWTON_STEPS):
        chance = 1.0 / (1.0 + np.exp(-(beta @ design.T)))  # (B, n)
        gradient = (weights * (target - chance)) @ design - prior * beta  # (B, p)
        curvature = weights * chance * (1.0 - chance)  # (B, n)
        hessian = (curvature @ outer).reshape(resamples, width, width) + ridge  # (B, p, p), negated
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        beta += step
        if np.abs(step).max() < TOLERANCE:
            break
    return beta


def _design(data: Comparisons, players: np.ndarray, reference: int, with_length: bool) -> np.ndarray:
    """One column per version but the reference (+1 for ``a``, -1 for ``b``), then the standardised length
    difference when ``with_length``."""
    columns = [int(player) for player in players if player != reference]
    column_of = {player: index for index, player in enumerate(columns)}
    design = np.zeros((len(data), len(columns) + with_length))
    rows = np.arange(len(data))
    for side, sign in ((data.a, 1.0), (data.b, -1.0)):
        for player, index in column_of.items():
            design[rows[side == player], index] = sign
    if with_length:
        spread = data.length.std()
        design[:, -1] = data.length / spread if spread > 0 else 0.0
    return design


def _connected(data: Comparisons, start: int) -> np.ndarray:
    """The versions joined to ``start`` by a chain of comparisons."""
    size = len(data.names)
    graph = sparse.coo_matrix((np.ones(len(data)), (data.a, data.b)), shape=(size, size))
    _, labels = sparse.csgraph.connected_components(graph, directed=False)
    return np.flatnonzero(labels == labels[start])


def _subset(data: Comparisons, keep: np.ndarray) -> Comparisons:
    return Comparisons(
        names=data.names,
        a=data.a[keep],
        b=data.b[keep],
        score=data.score[keep],
        length=data.length[keep],
        group=np.unique(data.group[keep], return_inverse=True)[1].astype(np.int64),
    )


def _resample_weights(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap weights (resamples, comparisons): each judgement drawn with replacement, its comparisons
    weighted by the number of times it was drawn. Row 0 is the data as it is."""
    count = int(groups.max()) + 1
    draws = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples).astype(np.float64)
    return np.vstack([np.ones((1, count)), draws])[:, groups]


def _percentiles(values: np.ndarray) -> np.ndarray:
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    return np.percentile(values, [tail, 100.0 - tail], axis=0)


def leaderboard(
    data: Comparisons,
    *,
    reference: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    lengths: dict[str, float] | None = None,
) -> Leaderboard:
    """Strengths with bootstrap intervals (``resamples`` resamples of judgements), raw and length-controlled,
    and win rates against ``reference`` (default: the version in the most comparisons). ``lengths``: the
    mean answer length of each version, shown beside it."""
    names = data.names
    counts = np.bincount(np.concatenate([data.a, data.b]), minlength=len(names))
    lengths = lengths or {}
    if len(data) == 0:
        standings = [Standing(name=name, comparisons=0, mean_length=lengths.get(name)) for name in names]
        return Leaderboard(reference=reference, standings=standings, comparisons=0, judgements=0, resamples=0)
    anchor = names.index(reference) if reference in names else int(np.argmax(counts))
    players = _connected(data, anchor)
    notes = []
    if players.size < len(names):
        notes.append("Some versions were never compared, directly or through others, with the reference: no strength.")
    joined = _subset(data, np.isin(data.a, players) & np.isin(data.b, players))
    rng = np.random.default_rng(seed)
    weights = _resample_weights(joined.group, resamples, rng)

    fits = {False: _bootstrap_fit(joined, players, anchor, weights, with_length=False)}
    if np.any(joined.length != 0):
        fits[True] = _bootstrap_fit(joined, players, anchor, weights, with_length=True)
    else:
        notes.append("No answer lengths: no length-controlled fit.")
    others = [int(player) for player in players if player != anchor]

    def strengths(beta: np.ndarray) -> dict[int, np.ndarray]:
        by_player = {anchor: np.zeros(beta.shape[0])}
        by_player.update({player: beta[:, index] for index, player in enumerate(others)})
        return by_player

    raw = strengths(fits[False])
    controlled = strengths(fits[True]) if True in fits else {}
    rows = []
    for player in range(len(names)):
        if player not in raw:
            rows.append(
                Standing(name=names[player], comparisons=int(counts[player]), mean_length=lengths.get(names[player]))
            )
            continue
        interval = _percentiles(raw[player][1:])
        controlled_fit = controlled.get(player)
        controlled_interval = _percentiles(controlled_fit[1:]) if controlled_fit is not None else None
        win_rate, win_interval, direct = _win_rate(joined, weights, player, anchor)
        rows.append(
            Standing(
                name=names[player],
                comparisons=int(counts[player]),
                strength=float(raw[player][0]),
                interval=(float(interval[0]), float(interval[1])),
                controlled=float(controlled_fit[0]) if controlled_fit is not None else None,
                controlled_interval=(float(controlled_interval[0]), float(controlled_interval[1]))
                if controlled_interval is not None
                else None,
                win_rate=win_rate,
                win_interval=win_interval,
                reference_comparisons=direct,
                mean_length=lengths.get(names[player]),
            )
        )
    rows = _ranked(rows)
    length_effect = length_interval = None
    if True in fits:
        low, high = _percentiles(fits[True][1:, -1])
        length_effect, length_interval = float(fits[True][0, -1]), (float(low), float(high))
    return Leaderboard(
        reference=names[anchor],
        standings=rows,
        comparisons=len(data),
        judgements=int(data.group.max()) + 1,
        resamples=resamples,
        length_effect=length_effect,
        length_interval=length_interval,
        notes=notes,
    )


def _bootstrap_fit(
    data: Comparisons, players: np.ndarray, anchor: int, weights: np.ndarray, *, with_length: bool
) -> np.ndarray:
    """The fit's coefficients under each row of ``weights`` (resamples + 1, parameters). Without the length
    covariate, comparisons with the same versions and outcome share one row of the design, their weights
    summed: a few dozen rows however many comparisons there are."""
    design = _design(data, players, anchor, with_length)
    target = data.score
    if not with_length:
        keys = np.stack([data.a, data.b, np.round(data.score * 2)], axis=1)
        unique, row_of = np.unique(keys, axis=0, return_inverse=True)
        merge = sparse.csr_matrix(
            (np.ones(len(data)), (np.arange(len(data)), row_of.ravel())), shape=(len(data), unique.shape[0])
        )
        first = np.unique(row_of.ravel(), return_index=True)[1]
        design, target = design[first], target[first]
        weights = np.asarray((merge.T @ weights.T).T)
    return np.vstack(
        [
            newton_fit(design, target, weights[start : start + RESAMPLE_BLOCK])
            for start in range(0, weights.shape[0], RESAMPLE_BLOCK)
        ]
    )


def _win_rate(
    data: Comparisons, weights: np.ndarray, player: int, reference: int
) -> tuple[float | None, tuple[float, float] | None, int]:
    """``player``'s share of wins (ties half) in its direct comparisons with ``reference``, with its bootstrap
    interval, and the number of those comparisons."""
    if player == reference:
        return None, None, 0
    forward = (data.a == player) & (data.b == reference)
    backward = (data.a == reference) & (data.b == player)
    direct = int(forward.sum() + backward.sum())
    if direct == 0:
        return None, None, 0
    won = np.where(forward, data.score, 0.0) + np.where(backward, 1.0 - data.score, 0.0)
    met = (forward | backward).astype(np.float64)
    totals = weights @ met
    rates = np.divide(weights @ won, totals, out=np.full(totals.shape, np.nan), where=totals > 0)
    resampled = rates[1:][~np.isnan(rates[1:])]
    if resampled.size == 0:
        return float(rates[0]), None, direct
    low, high = _percentiles(resampled)
    return float(rates[0]), (float(low), float(high)), direct


def _ranked(rows: list[Standing]) -> list[Standing]:
    """Strongest first; a version's rank is 1 + the number of versions whose interval lies wholly above its
    own (Arena's rule: versions whose intervals overlap share ranks)."""
    fitted = [row for row in rows if row.interval is not None]
    ranked = []
    for row in sorted(fitted, key=lambda row: -(row.strength or 0.0)):
        assert row.interval is not None
        above = sum(1 for other in fitted if other.interval is not None and other.interval[0] > row.interval[1])
        ranked.append(replace(row, rank=1 + above))
    return ranked + [row for row in rows if row.interval is None]


def ranking_agreement(first: Leaderboard, second: Leaderboard) -> float | None:
    """Kendall's tau-b between the strengths two leaderboards give the versions both fitted (None under 2)."""
    own = {row.name: row.strength for row in first.standings if row.strength is not None}
    other = {row.name: row.strength for row in second.standings if row.strength is not None}
    shared = sorted(set(own) & set(other))
    if len(shared) < 2:
        return None
    tau = kendalltau([own[name] for name in shared], [other[name] for name in shared]).statistic
    return None if np.isnan(tau) else float(tau)


CSV_COLUMNS = (
    "rank", "version", "comparisons", "strength", "strength_low", "strength_high", "controlled", "controlled_low",
    "controlled_high", "win_rate", "win_rate_low", "win_rate_high", "reference_comparisons", "mean_length",
)  # fmt: skip


def as_csv(board: Leaderboard) -> str:
    """The leaderboard as CSV, one row per version, strongest first; empty cells where a figure is missing."""

    def cells(interval: tuple[float, float] | None) -> tuple:
        return interval if interval is not None else ("", "")

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in board.standings:
        writer.writerow(
            [
                "" if row.rank is None else row.rank,
                row.name,
                row.comparisons,
                "" if row.strength is None else row.strength,
                *cells(row.interval),
                "" if row.controlled is None else row.controlled,
                *cells(row.controlled_interval),
                "" if row.win_rate is None else row.win_rate,
                *cells(row.win_interval),
                row.reference_comparisons,
                "" if row.mean_length is None else row.mean_length,
            ]  # fmt: skip
        )
    return out.getvalue()
