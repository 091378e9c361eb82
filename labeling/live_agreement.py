"""The reward model against raters on fresh labels: how often the current reward model orders a judgement's
responses as the rater did, by rater, week and slice, and the drift rule.

A judgement is read as the pairs it decides: every response of a better group against every response of a worse
one (ties decide nothing). The model agrees with a pair when it scores the preferred response higher, half agrees
when it scores both the same, and disagrees otherwise. A judgement counts only when the model scored all of its
responses and it decides at least one pair. Agreement is the share of decided pairs the model agrees with, with
a 95% Wilson interval over those pairs.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from labeling.quality import wilson_interval


@dataclass(frozen=True)
class CheckedJudgement:
    """One human judgement checked against the reward model."""

    judgement_id: int
    rater: str
    created_at: datetime
    slice: str
    agreed: float
    pairs: int


def judgement_check(ranking: list[list[int]], scores: dict[int, float]) -> tuple[float, int] | None:
    """(agreed, pairs) of the pairs ``ranking`` (groups of response ids, best first) decides, against the model's
    ``scores``; None where the model did not score every response."""
    if any(response_id not in scores for group in ranking for response_id in group):
        return None
    agreed, pairs = 0.0, 0
    for position, better_group in enumerate(ranking):
        for worse_group in ranking[position + 1 :]:
            for better in better_group:
                for worse in worse_group:
                    pairs += 1
                    gap = scores[better] - scores[worse]
                    agreed += 1.0 if gap > 0 else 0.5 if gap == 0 else 0.0
    return agreed, pairs


@dataclass
class Figure:
    """Agreement over a set of checked judgements."""

    label: str
    agreed: float = 0.0
    pairs: int = 0
    judgements: int = 0

    def add(self, check: CheckedJudgement) -> None:
        self.agreed += check.agreed
        self.pairs += check.pairs
        self.judgements += 1

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.agreed / self.pairs, self.pairs) if self.pairs else None

    def as_dict(self) -> dict:
        interval = self.interval
        return {
            "name": self.label,
            "agreement": self.rate,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
            "pairs": self.pairs,
            "judgements": self.judgements,
        }


def figures_by(checks: Iterable[CheckedJudgement], key: Callable[[CheckedJudgement], str]) -> list[Figure]:
    """One figure per value of ``key``, in the values' order."""
    groups: dict[str, Figure] = defaultdict(lambda: Figure(""))
    for check in checks:
        label = key(check)
        groups[label].label = label
        groups[label].add(check)
    return [groups[label] for label in sorted(groups)]


def week_of(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class Drift:
    """The drift rule: agreement on the newest ``window`` checked judgements more than ``margin`` below the
    reward model's held-out accuracy."""

    window: int
    margin: float
    held_out: float | None
    recent: Figure = field(default_factory=lambda: Figure("newest"))

    @property
    def full(self) -> bool:
        return self.recent.judgements >= self.window

    @property
    def warning(self) -> bool:
        rate = self.recent.rate
        return self.full and self.held_out is not None and rate is not None and rate < self.held_out - self.margin

    def as_dict(self) -> dict:
        return {
            "window": self.window,
            "margin": self.margin,
            "held_out_accuracy": self.held_out,
            "newest": self.recent.as_dict(),
            "warning": self.warning,
        }


def drift_of(checks: list[CheckedJudgement], *, window: int, margin: float, held_out: float | None) -> Drift:
    """The drift rule on ``checks`` (any order): the newest ``window`` of them."""
    drift = Drift(window=window, margin=margin, held_out=held_out)
    for check in sorted(checks, key=lambda check: (check.created_at, check.judgement_id))[-window:]:
        drift.recent.add(check)
    return drift
