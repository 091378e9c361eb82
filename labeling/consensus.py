"""One ranking per task from several judgements: ranked pairs (Tideman), weighted by each judgement's trust.

Why ranked pairs and not Bradley-Terry: a task has a handful of judgements, far too few for a Bradley-Terry fit
to be stable (a response that wins every comparison has an infinite strength, and the fit needs a prior to
say anything); ranked pairs needs no fit, always gives an order, agrees with the majority whenever one response
beats every other head to head (a Condorcet winner), and is deterministic. Each judgement votes, with its
weight, on every pair of responses it orders; the pairs are locked in from the largest majority down, skipping
any that would contradict those already locked; responses that end up next to each other with no majority
between them share a place.
"""

from collections.abc import Sequence


def pairwise_votes(judgements: Sequence[tuple[list[list[int]], float]]) -> dict[tuple[int, int], float]:
    """(a, b) to the weight of the judgements that put a above b."""
    votes: dict[tuple[int, int], float] = {}
    for ranking, weight in judgements:
        for upper, group in enumerate(ranking):
            for lower in ranking[upper + 1 :]:
                for winner in group:
                    for loser in lower:
                        votes[winner, loser] = votes.get((winner, loser), 0.0) + weight
    return votes


def _reaches(edges: dict[int, set[int]], start: int, goal: int) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return False


def ranked_pairs(candidates: Sequence[int], judgements: Sequence[tuple[list[list[int]], float]]) -> list[list[int]]:
    """The consensus ranking of ``candidates`` (groups of ids, best first) from (ranking, weight) judgements."""
    votes = pairwise_votes(judgements)
    majorities = []
    for index, a in enumerate(candidates):
        for b in candidates[index + 1 :]:
            margin = votes.get((a, b), 0.0) - votes.get((b, a), 0.0)
            if margin:
                winner, loser = (a, b) if margin > 0 else (b, a)
                majorities.append((abs(margin), votes.get((winner, loser), 0.0), winner, loser))
    majorities.sort(key=lambda item: (-item[0], -item[1], item[2], item[3]))
    edges: dict[int, set[int]] = {}
    for _, _, winner, loser in majorities:
        if not _reaches(edges, loser, winner):  # locking it would make a cycle
            edges.setdefault(winner, set()).add(loser)
    # The locked graph's order: repeatedly take the responses nothing left beats (in id order, to be stable).
    remaining, order = list(candidates), []
    while remaining:
        beaten = {loser for winner in remaining for loser in edges.get(winner, ()) if loser in remaining}
        top = sorted(candidate for candidate in remaining if candidate not in beaten)
        order.append(top)
        remaining = [candidate for candidate in remaining if candidate not in top]
    return order


def agreement_with(consensus: list[list[int]], judgements: Sequence[tuple[list[list[int]], float]]) -> float | None:
    """The weighted share of the judgements' pairwise votes that the consensus orders the same way."""
    place = {response: index for index, group in enumerate(consensus) for response in group}
    agreeing = total = 0.0
    for (winner, loser), weight in pairwise_votes(judgements).items():
        total += weight
        agreeing += weight if place[winner] < place[loser] else 0.0
    return agreeing / total if total else None
