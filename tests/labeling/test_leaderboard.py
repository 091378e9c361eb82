"""The leaderboard's statistics on simulated comparisons whose truth is known: Bradley-Terry strengths
recovered within their intervals, intervals that cover the truth as often as they claim, a length-controlled
fit that sees through raters who prefer longer answers, and the Newton fit equal to scikit-learn's."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from labeling import leaderboard

TRUTH = (0.0, 0.4, 1.0)  # log-odds strengths; v0 is the reference


def simulate(
    seed: int, count: int = 3000, truth=TRUTH, *, ties: float = 0.0, length_bias: float = 0.0, long_writer: int = -1
) -> leaderboard.Comparisons:
    """``count`` judgements of two versions drawn at random. Each answer's length is about 200 characters
    (``long_writer`` writes about 400); raters prefer the longer answer by ``length_bias`` log-odds per unit
    of the relative length difference, and call a tie with probability ``ties``."""
    rng = np.random.default_rng(seed)
    size = len(truth)
    first = rng.integers(0, size, count)
    second = (first + rng.integers(1, size, count)) % size
    mean = np.where(np.arange(size) == long_writer, 400.0, 200.0)
    length_a = rng.normal(mean[first], 40.0)
    length_b = rng.normal(mean[second], 40.0)
    relative = (length_a - length_b) / (length_a + length_b)
    strengths = np.asarray(truth)
    chance = 1.0 / (1.0 + np.exp(-(strengths[first] - strengths[second] + length_bias * relative)))
    score = (rng.random(count) < chance).astype(np.float64)
    score[rng.random(count) < ties] = 0.5
    return leaderboard.Comparisons(
        names=tuple(f"v{index}" for index in range(size)),
        a=first,
        b=second,
        score=score,
        length=relative,
        group=np.arange(count),
    )


def by_name(board: leaderboard.Leaderboard) -> dict[str, leaderboard.Standing]:
    return {row.name: row for row in board.standings}


def test_strengths_are_recovered_in_the_right_order_each_within_its_interval():
    board = leaderboard.leaderboard(simulate(0), reference="v0")
    rows = by_name(board)
    assert [row.name for row in board.standings] == ["v2", "v1", "v0"]
    assert [row.rank for row in board.standings] == [1, 2, 3]
    for index, truth in enumerate(TRUTH[1:], start=1):
        row = rows[f"v{index}"]
        low, high = row.interval
        assert low <= truth <= high, (row.name, row.interval)
        assert high - low < 0.35  # 3,000 comparisons pin a strength to about +-0.1
    assert board.resamples >= 200 and board.comparisons == board.judgements == 3000
    # The direct win rate against the reference is near sigmoid(strength) and within its interval.
    for index, truth in enumerate(TRUTH[1:], start=1):
        expected = 1.0 / (1.0 + np.exp(-truth))
        row = rows[f"v{index}"]
        assert row.win_interval[0] <= expected <= row.win_interval[1]
        assert row.reference_comparisons == pytest.approx(1000, rel=0.15)


def test_the_intervals_cover_the_truth_in_at_least_90_of_100_simulated_data_sets():
    covered = 0
    for seed in range(100):
        rows = by_name(leaderboard.leaderboard(simulate(1000 + seed, count=1500), reference="v0", seed=seed))
        low, high = rows["v2"].interval
        covered += low <= TRUTH[2] <= high
    assert covered >= 90, covered


def test_ties_count_half_a_win_each_way():
    data = simulate(3, ties=0.3)
    rows = by_name(leaderboard.leaderboard(data, reference="v0"))
    for index, truth in enumerate(TRUTH[1:], start=1):
        low, high = rows[f"v{index}"].interval
        # Ties shrink the visible difference; the order stays and each version still beats the reference.
        assert low > 0.0 and rows[f"v{index}"].strength < truth + 0.2
    assert rows["v2"].strength > rows["v1"].strength


def test_raters_who_prefer_longer_answers_make_the_long_writer_win_raw_but_not_length_controlled():
    equal = (0.0, 0.0, 0.0)
    board = leaderboard.leaderboard(simulate(5, truth=equal, length_bias=6.0, long_writer=2), reference="v0")
    long_writer = by_name(board)["v2"]
    assert long_writer.interval[0] > 0.3  # raw: clearly stronger than the reference
    assert board.standings[0].name == "v2"
    low, high = long_writer.controlled_interval
    assert low <= 0.0 <= high  # length-controlled: no better than the reference
    assert board.length_interval[0] > 0.0  # and the fit found the raters' taste for length


def test_a_version_never_compared_with_the_others_gets_no_strength():
    data = simulate(6, count=600)
    lonely = leaderboard.Comparisons(
        names=(*data.names, "v3", "v4"),
        a=np.append(data.a, 3),
        b=np.append(data.b, 4),
        score=np.append(data.score, 1.0),
        length=np.append(data.length, 0.1),
        group=np.append(data.group, data.group.max() + 1),
    )
    board = leaderboard.leaderboard(lonely, reference="v0")
    rows = by_name(board)
    assert rows["v3"].strength is None and rows["v3"].comparisons == 1 and rows["v3"].rank is None
    assert rows["v1"].strength is not None and board.notes
    assert [row.name for row in board.standings][-2:] == ["v3", "v4"]


def test_one_judgement_s_comparisons_are_resampled_together():
    """A K-wise ranking gives several comparisons; the bootstrap draws the judgement, so duplicating every
    comparison inside its judgement leaves the interval as wide as before (drawn separately, it would shrink)."""
    data = simulate(7, count=800)
    doubled = leaderboard.Comparisons(
        names=data.names,
        a=np.repeat(data.a, 2),
        b=np.repeat(data.b, 2),
        score=np.repeat(data.score, 2),
        length=np.repeat(data.length, 2),
        group=np.repeat(data.group, 2),
    )
    once = by_name(leaderboard.leaderboard(data, reference="v0"))["v2"].interval
    twice = by_name(leaderboard.leaderboard(doubled, reference="v0"))["v2"].interval
    assert twice[1] - twice[0] == pytest.approx(once[1] - once[0], rel=0.25)
    assert board_judgements(doubled) == 800


def board_judgements(data: leaderboard.Comparisons) -> int:
    return leaderboard.leaderboard(data, reference="v0", resamples=10).judgements


@pytest.mark.parametrize("with_length", [False, True])
def test_the_newton_fit_equals_scikit_learn_logistic_regression(with_length):
    data = simulate(8, count=1000, ties=0.2, length_bias=2.0)
    design = leaderboard._design(data, np.arange(3), 0, with_length)
    ours = leaderboard.newton_fit(design, data.score, np.ones((1, len(data))))[0]
    # A tie is half a win each way: two rows, weighted by the score and by one minus it.
    model = LogisticRegression(C=1.0 / leaderboard.PRIOR, fit_intercept=False, tol=1e-12, max_iter=10_000)
    model.fit(
        np.vstack([design, design]),
        np.r_[np.ones(len(data)), np.zeros(len(data))],
        sample_weight=np.r_[data.score, 1.0 - data.score],
    )
    assert ours == pytest.approx(model.coef_[0], abs=1e-6)


def test_ranking_agreement_is_kendalls_tau_between_two_boards():
    first = leaderboard.leaderboard(simulate(9), reference="v0", resamples=20)
    reversed_truth = leaderboard.leaderboard(simulate(9, truth=(1.0, 0.4, 0.0)), reference="v0", resamples=20)
    assert leaderboard.ranking_agreement(first, first) == pytest.approx(1.0)
    assert leaderboard.ranking_agreement(first, reversed_truth) == pytest.approx(-1.0)
