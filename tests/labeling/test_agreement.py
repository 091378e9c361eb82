"""Agreement figures: α equals the krippendorff package's on the same data, missing values included; τ-b and the
intervals behave as they should on data whose agreement is known."""

import krippendorff
import numpy as np
import pytest

from labeling import agreement


def alpha_of(reliability: np.ndarray, level: str) -> float:
    """Ours, from a raters × units matrix of values 0..V-1 with NaN where a rater gave none."""
    raters, units = np.nonzero(~np.isnan(reliability))
    values = reliability[raters, units].astype(np.int64)
    size = int(values.max()) + 1
    _, counts = agreement.unit_value_counts(units, values, size)
    matrix = agreement.coincidences_by_group(counts, np.zeros(len(counts), np.int64), 1)[0]
    return agreement.alpha_from_coincidences(matrix, level)


@pytest.mark.parametrize("level", ["ordinal", "nominal"])
@pytest.mark.parametrize("seed", range(5))
def test_alpha_equals_the_krippendorff_package_on_the_same_matrices_with_missing_values(level, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, 60)
    noise = rng.integers(-1, 2, (6, 60)) * (rng.random((6, 60)) < 0.4)
    reliability = np.clip(truth + noise, 0, 4).astype(np.float64)
    reliability[rng.random((6, 60)) < 0.3] = np.nan  # 30% missing
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement=level)
    assert alpha_of(reliability, level) == pytest.approx(expected, abs=1e-12)


def test_alpha_is_one_for_identical_rankings_and_near_zero_for_random_ones():
    same = np.tile(np.arange(4, dtype=np.float64), (3, 25))
    assert alpha_of(same, "ordinal") == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 4, (5, 2000)).astype(np.float64)
    assert abs(alpha_of(noisy, "ordinal")) < 0.03


def places_of(rankings: list[tuple[int, int, list[list[int]], int]]) -> agreement.Inputs:
    """The figures' inputs from (rater, task, ranking, week) tuples; judgement ids in order."""
    rows = [
        (number, rater, task, response, place, week)
        for number, (rater, task, ranking, week) in enumerate(rankings)
        for place, group in enumerate(ranking)
        for response in group
    ]
    columns = np.array(rows, dtype=np.int64).T
    return agreement.Inputs.from_places(agreement.Places(*columns))


def test_kendall_tau_b_pairs_and_the_raters_figures_on_known_rankings():
    # Task 1: raters 1 and 2 agree, rater 3 reverses; task 2: all agree. Four responses each.
    rankings = [
        (1, 1, [[10], [11], [12], [13]], 0), (2, 1, [[10], [11], [12], [13]], 0), (3, 1, [[13], [12], [11], [10]], 0),
        (1, 2, [[20], [21, 22], [23]], 1), (2, 2, [[20], [21, 22], [23]], 1), (3, 2, [[20], [21, 22], [23]], 1),
    ]  # fmt: skip
    project, raters = agreement.agreement(places_of(rankings))
    # Task 1: pairs (1,2) = 1, (1,3) = -1, (2,3) = -1; task 2: three pairs at 1.
    assert project["kendall_tau_b"]["value"] == pytest.approx((1 - 1 - 1 + 3) / 6)
    assert project["kendall_tau_b"]["n"] == 6
    assert raters[3]["kendall_tau_b"]["value"] == pytest.approx((-1 - 1 + 1 + 1) / 4)
    assert raters[1]["kendall_tau_b"]["value"] == pytest.approx((1 - 1 + 1 + 1) / 4)
    assert [week["week"] for week in project["weeks"]] == [0, 1]
    assert project["weeks"][1]["kendall_tau_b"]["value"] == pytest.approx(1.0)


def test_intervals_contain_the_value_and_narrow_with_more_tasks():
    rng = np.random.default_rng(3)

    def simulated(tasks: int):
        rankings = []
        for task in range(tasks):
            truth = list(range(task * 10, task * 10 + 3))
            for rater in range(4):
                order = truth[:] if rng.random() < 0.7 else list(rng.permutation(truth))
                rankings.append((rater, task, [[int(response)] for response in order], task % 3))
        return agreement.agreement(places_of(rankings))[0]

    small, large = simulated(30), simulated(300)
    for result in (small, large):
        alpha = result["alpha"]
        assert alpha["low"] <= alpha["value"] <= alpha["high"]
        tau = result["kendall_tau_b"]
        assert tau["low"] <= tau["value"] <= tau["high"]
    width = lambda figure: figure["high"] - figure["low"]  # noqa: E731
    assert width(large["alpha"]) < width(small["alpha"]) * 0.6
    assert 0.3 < large["alpha"]["value"] < 0.9
