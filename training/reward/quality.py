"""What a reward model's scores say about held-out judgements: loss and accuracy, accuracy by the rater's
margin, calibration of its pairwise probabilities (and the temperature that calibrates them), how much it
prefers long replies; and which epoch to keep.

A reward model's probability that the response scored ``r_a`` beats the one scored ``r_b`` is
``sigmoid((r_a - r_b) / T)``. ``T`` is fitted after training on the held-out judgements (one parameter: the
model's ranking and accuracy stay as they are), and stored with the model, so that whoever reads its scores
as probabilities (routing by uncertainty, soft AI labels) reads calibrated ones.
"""

import math

import torch
import torch.nn.functional as F

CALIBRATION_BINS = 10


def _targets(difference: torch.Tensor, probability: torch.Tensor) -> torch.Tensor:
    """The chance that the first of each pair is the better one: 1 for a hard label, the soft label otherwise."""
    return torch.nan_to_num(probability, nan=1.0).to(difference.dtype)


def calibration_error(
    difference: torch.Tensor, probability: torch.Tensor, temperature: float = 1.0, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error of the pairwise probabilities: each pair's confidence (the probability of
    the side the model prefers, 0.5 to 1) against how often that side is the better one, over ``bins``
    equal-width bins of confidence, weighted by the pairs in each."""
    if difference.numel() == 0:
        return math.nan
    chance = torch.sigmoid(difference.double() / temperature)
    target = _targets(difference, probability).double()
    confidence = torch.maximum(chance, 1 - chance)
    right = torch.where(chance >= 0.5, target, 1 - target)
    which = ((confidence - 0.5) * 2 * bins).long().clamp(max=bins - 1)
    error = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():
            error += float(chosen.sum()) * abs(float(right[chosen].mean() - confidence[chosen].mean()))
    return error / difference.numel()


def calibration_error_floor(difference: torch.Tensor, temperature: float = 1.0, bins: int = CALIBRATION_BINS) -> float:
    """The calibration error a perfectly calibrated model with these confidences would still show on this
    many pairs, from chance alone (each bin's share of right answers is a sum of coin flips): about 0.07 on
    180 pairs, 0.045 on 500. An error near its floor is as calibrated as the pairs can tell."""
    if difference.numel() == 0:
        return math.nan
    chance = torch.sigmoid(difference.double() / temperature)
    confidence = torch.maximum(chance, 1 - chance)
    which = ((confidence - 0.5) * 2 * bins).long().clamp(max=bins - 1)
    spread = 0.0
    for index in range(bins):
        chosen = which == index
        if chosen.any():  # E|mean of n flips - their mean chance| ~ sqrt(2 / pi) * sd, weighted by n / total
            spread += math.sqrt(2 / math.pi) * math.sqrt(float((confidence[chosen] * (1 - confidence[chosen])).sum()))
    return spread / difference.numel()


def fit_temperature(difference: torch.Tensor, probability: torch.Tensor, steps: int = 50) -> float:
    """The T that minimises the log loss of ``sigmoid(difference / T)`` against the labels: a one-feature
    logistic regression without intercept in ``1 / T`` (convex), solved by Newton's method. A model whose
    differences carry no signal (or the wrong one) gets a very large T: probabilities near 0.5."""
    if difference.numel() == 0 or not bool((difference != 0).any()):
        return 1.0
    x = difference.double()
    target = _targets(difference, probability).double()
    beta = 1.0
    for _ in range(steps):
        chance = torch.sigmoid(beta * x)
        gradient = float(((chance - target) * x).sum())
        curvature = float((chance * (1 - chance) * x * x).sum())
        if curvature <= 1e-12:
            break
        step = gradient / curvature
        beta = max(beta - step, beta / 10)  # stay positive: a damped step when Newton overshoots past zero
        if abs(step) < 1e-10 * max(1.0, abs(beta)):
            break
    return float(1.0 / beta) if beta > 1e-6 else 1e6


def log_loss(difference: torch.Tensor, probability: torch.Tensor, temperature: float = 1.0) -> float:
    if difference.numel() == 0:
        return math.nan
    scaled = difference.double() / temperature
    target = _targets(difference, probability).double()
    return float(-(target * F.logsigmoid(scaled) + (1 - target) * F.logsigmoid(-scaled)).mean())


def accuracy(difference: torch.Tensor) -> float:
    """Share of pairs the model orders as the raters did; a tie in reward counts as half right."""
    if difference.numel() == 0:
        return math.nan
    return float(((difference > 0).double() + 0.5 * (difference == 0).double()).mean())


def accuracy_by_margin(difference: torch.Tensor, rated_margin: torch.Tensor) -> dict[str, dict]:
    """Accuracy and pair count for each margin the raters gave (1: slightly better ... 3: much better), and
    for the pairs without one."""
    groups: dict[str, dict] = {}
    known = ~torch.isnan(rated_margin)
    for value in sorted({float(margin) for margin in rated_margin[known].tolist()}):
        chosen = known & (rated_margin == value)
        groups[f"{value:g}"] = {"accuracy": accuracy(difference[chosen]), "pairs": int(chosen.sum())}
    if (~known).any():
        groups["none"] = {"accuracy": accuracy(difference[~known]), "pairs": int((~known).sum())}
    return groups


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 0, ties given their mean rank."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    for value in torch.unique(values):
        tied = values == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman's rho: the Pearson correlation of the ranks."""
    if len(first) < 3:
        return math.nan
    a, b = _ranks(first.double()), _ranks(second.double())
    a, b = a - a.mean(), b - b.mean()
    spread = float(a.norm() * b.norm())
    return float((a * b).sum()) / spread if spread > 0 else math.nan


def length_bias(
    rewards: torch.Tensor, lengths: torch.Tensor, winner: torch.Tensor, loser: torch.Tensor
) -> dict[str, float]:
    """How much the reward follows reply length: the rank correlation of reward and length over the responses,
    the share of pairs (of unequal length) in which the model prefers the longer reply, and the share in
    which the raters did. A model far above its raters on the second is rewarding length."""
    longer = lengths[winner] != lengths[loser]
    model_prefers_first = rewards[winner] > rewards[loser]
    first_longer = lengths[winner] > lengths[loser]
    pairs = int(longer.sum())
    return {
        "length_correlation": rank_correlation(rewards, lengths.double()),
        "prefers_longer": float((model_prefers_first == first_longer)[longer].double().mean()) if pairs else math.nan,
        "raters_prefer_longer": float(first_longer[longer].double().mean()) if pairs else math.nan,
    }


def best_epoch(evaluations: list[dict]) -> dict:
    """The evaluation with the lowest held-out loss (the earliest of equals)."""
    return min(evaluations, key=lambda evaluation: (evaluation["eval_loss"], evaluation["epoch"]))


def should_stop(evaluations: list[dict], patience: int) -> bool:
    """True when the last ``patience`` evaluations did not improve on the best loss before them."""
    if patience <= 0 or len(evaluations) <= patience:
        return False
    best_before = min(evaluation["eval_loss"] for evaluation in evaluations[:-patience])
    return all(evaluation["eval_loss"] >= best_before for evaluation in evaluations[-patience:])
