"""The leaderboard's fit at scale: Bradley-Terry strengths with 200 bootstrap resamples, raw and length-controlled,
against the obvious way of doing the same with scikit-learn (one LogisticRegression fit per resample).

Simulates 10 versions with known strengths and judgements of two answers each, raters who prefer longer answers,
(100,000 comparisons; `--quick`: 20,000), then times `labeling.leaderboard.leaderboard` (both fits, 200
resamples each, batched Newton steps) and scikit-learn's `LogisticRegression(C=1, fit_intercept=False)` fitted
on the same weighted rows for each of the same resamples (the raw and the length-controlled fit). Prints both
times, their ratio, the largest difference between the two methods' strengths and interval ends (they fit the
same model, so it should be near 0), and the time against a limit of 5 s for the admin page's fit.

    python bench/leaderboard.py [--quick]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labeling import leaderboard  # noqa: E402

VERSIONS = 10
LIMIT_S = 5.0


def simulate(count: int, seed: int = 0) -> leaderboard.Comparisons:
    rng = np.random.default_rng(seed)
    truth = np.linspace(0.0, 1.5, VERSIONS)
    first = rng.integers(0, VERSIONS, count)
    second = (first + rng.integers(1, VERSIONS, count)) % VERSIONS
    mean_length = rng.uniform(150, 450, VERSIONS)
    length_a, length_b = rng.normal(mean_length[first], 50.0), rng.normal(mean_length[second], 50.0)
    relative = (length_a - length_b) / (length_a + length_b)
    chance = 1.0 / (1.0 + np.exp(-(truth[first] - truth[second] + 2.0 * relative)))
    score = (rng.random(count) < chance).astype(np.float64)
    return leaderboard.Comparisons(
        names=tuple(f"v{index}" for index in range(VERSIONS)), a=first, b=second, score=score, length=relative,
        group=np.arange(count),
    )  # fmt: skip


def with_scikit_learn(data: leaderboard.Comparisons, resamples: int, seed: int) -> dict[bool, np.ndarray]:
    """Coefficients (resamples + 1, parameters) of each fit, one LogisticRegression per resample."""
    from sklearn.linear_model import LogisticRegression

    weights = leaderboard._resample_weights(data.group, resamples, np.random.default_rng(seed))
    players = np.arange(VERSIONS)
    fits = {}
    for with_length in (False, True):
        design = leaderboard._design(data, players, 0, with_length)
        rows = np.vstack([design, design])
        target = np.r_[np.ones(len(data)), np.zeros(len(data))]
        coefficients = []
        for row in weights:
            model = LogisticRegression(C=1.0 / leaderboard.PRIOR, fit_intercept=False, tol=1e-8, max_iter=1000)
            model.fit(rows, target, sample_weight=np.r_[row * data.score, row * (1.0 - data.score)])
            coefficients.append(model.coef_[0])
        fits[with_length] = np.asarray(coefficients)
    return fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 comparisons instead of 100,000")
    parser.add_argument("--comparisons", type=int, default=100_000)
    args = parser.parse_args()
    count = 20_000 if args.quick else args.comparisons
    data = simulate(count)
    resamples = leaderboard.RESAMPLES

    started = time.perf_counter()
    board = leaderboard.leaderboard(data, reference="v0", resamples=resamples, seed=1)
    ours = time.perf_counter() - started
    print(f"ours: {count:,} comparisons, {resamples} resamples, both fits: {ours:.2f} s")

    started = time.perf_counter()
    theirs = with_scikit_learn(data, resamples, seed=1)
    baseline = time.perf_counter() - started
    print(f"scikit-learn, one fit per resample: {baseline:.2f} s")

    rows = {row.name: row for row in board.standings}
    differences = []
    for index in range(1, VERSIONS):
        row = rows[f"v{index}"]
        for fitted, point, interval in ((theirs[False], row.strength, row.interval),
                                        (theirs[True], row.controlled, row.controlled_interval)):  # fmt: skip
            column = fitted[:, index - 1]
            low, high = np.percentile(column[1:], [2.5, 97.5])
            differences += [abs(column[0] - point), abs(low - interval[0]), abs(high - interval[1])]
    largest = float(max(differences))
    print(f"largest difference in strengths and interval ends: {largest:.2e}")
    print(f"ratio to scikit-learn: {ours / baseline:.3f}; to the {LIMIT_S:.0f} s limit: {ours / LIMIT_S:.3f}")
    print(json.dumps({
        "comparisons": count, "resamples": resamples, "ours_s": round(ours, 3), "scikit_learn_s": round(baseline, 3),
        "ratio_to_scikit_learn": round(ours / baseline, 4), "ratio_to_limit": round(ours / LIMIT_S, 4),
        "largest_difference": largest,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
