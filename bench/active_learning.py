"""Does routing pay? Labels each task order needs before a reward model reaches a held-out accuracy target.

A simulation with a hidden oracle: the real HH-RLHF harmless pairs in ``bench/data`` (1,797 with two replies;
``--quick``: the first 900), whose preferred reply is revealed only when a simulated rater labels the pair. The
reward model is cheap, so that it can be retrained after every batch: all-MiniLM-L6-v2, frozen, mean-pooled and
L2-normalised embeddings e(x) of the reply alone (up to 256 tokens; ``--quick``: 128), and a Bradley-Terry
linear reward r(x) = w . e(x), fitted as scikit-learn's L2 logistic regression without intercept (C = 0.1) on
e(a) - e(b), each labelled pair shown in a random orientation. Both choices were made on full-pool accuracy
before any order was compared: the reply alone against the last user turn and the reply read as a text pair
(this bench's three splits: 0.624 against 0.596 at 256 tokens, 0.628 against 0.611 at 128; 256 and 128 tokens
tie over 20 seeds at 0.633), and C = 0.1 against 0.003 to 30 (0.1 best; 0.01 and 0.03 within a point, 10 and
30 four points lower).

Each seed holds out 25% of the prompts (their pairs are the test set) and puts the rest in the pool, in file
order, as the product's tasks are in id order. A seed set of 40 random pool pairs is labelled, then rounds of
40 labels chosen by the order, retrain, re-score the pool, until the pool is exhausted; the held-out accuracy
is recorded after each round. The three orders are the product's:

- fifo: tasks in id (file) order;
- uncertainty: the smallest score gap |r(a) - r(b)| under the current reward model first;
- disagreement: the largest spread max_v p_v - min_v p_v first, p_v = sigmoid(r_v(a) - r_v(b)) under each of
  the last three reward model versions (one per round); fifo order while fewer than two versions exist.

The target is 90% of the way from 0.5 to the held-out accuracy with the whole pool labelled (the same model for
every order: the last point of each curve). An order's labels needed, for one seed, is the smallest labelled
count from which its accuracy stays at or above the target to the end of the pool; the figures are the means
over the seeds (each seed changes the split, the seed set and the orientations). saving = 1 - min(uncertainty,
disagreement) / fifo; the goal is 0.2. Its standard error comes from the seeds' paired differences. Prints each
order's curve (mean over the seeds), the full-pool accuracy, the target and each seed's labels needed; the last
line is one JSON object.

What the data allows: this reward model is near its plateau (0.62 of 0.63) after about 120 labels, so labels
needed is mostly the round after which noise of a point or two stops dipping below the target: one seed's
figure ranges from 40 to 1,280. Over 20 seeds, uncertainty needs 40% more labels than fifo (the smallest gaps
are near-ties, likely the noisiest labels) and disagreement 20.5% fewer, standard error 11%. Varied one at a
time (20 seeds each), the disagreement saving is 9% with batches of 20, 18% with 80, 5% with a seed set of 80,
9% at 128 tokens, -1%, 9% and 8% with C = 0.03, 1 and 10, and -16% with the turn-and-reply text; uncertainty's
is -3% to -46%. Over the first ten rounds disagreement's curve is above fifo's in every one of these (by 0.2 to
1.1 points), uncertainty's below in all but C = 10: the direction holds, a 20% saving is within the noise.

Embeddings are cached under ``var/cache/active-learning`` keyed by the data file's hash, the text, the length
and the number of pairs, so a rerun skips the embedding step (a cold cache embeds ~3,600 replies: about a
minute on two cores).

    python bench/active_learning.py [--quick] [--seeds 3]
"""

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _hh import HH, hh_records  # noqa: E402

ORDERS = ("fifo", "uncertainty", "disagreement")
HELD_OUT = 0.25  # share of the prompts whose pairs are the test set
L2_C = 0.1  # scikit-learn's inverse L2 strength, fixed
TARGET_SHARE = 0.9  # of the way from chance (0.5) to the full-pool accuracy
VERSIONS = 3  # reward model versions the disagreement order compares
GOAL = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the first 900 pairs, replies cut at 128 tokens")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (splits) to average over (default 3)")
    parser.add_argument("--pairs", type=int, default=0, help="pairs to use (default 0: all)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per embedded text (default 256)")
    parser.add_argument("--text", choices=("reply", "turn"), default="reply",
                        help="embed the reply alone, or the last user turn and the reply as a text pair")  # fmt: skip
    parser.add_argument("--seed-labels", type=int, default=40, help="random labels before the first round")
    parser.add_argument("--batch", type=int, default=40, help="labels per round (default 40)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "cache" / "active-learning")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.max_length = 900, 128
    return args


def last_user_turn(messages: list[dict]) -> str:
    return next((turn["content"] for turn in reversed(messages) if turn["role"] == "user"), "")


def embed(texts: list[str], firsts: list[str] | None, max_length: int) -> np.ndarray:
    """(texts, 384) mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings; with ``firsts``, each text is the
    second half of a text pair. Texts of similar length are batched together."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from training.models import resolve_model

    path = resolve_model("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    lengths = [len(text) + (len(firsts[index]) if firsts else 0) for index, text in enumerate(texts)]
    order = np.argsort(lengths, kind="stable")
    vectors = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            rows = order[start : start + 64]
            seconds = [texts[row] for row in rows]
            inputs = tokenizer(
                [firsts[row] for row in rows] if firsts else seconds, seconds if firsts else None,
                truncation=True, max_length=max_length, padding=True, return_tensors="pt",
            )  # fmt: skip
            hidden = model(**inputs).last_hidden_state  # (rows, tokens, 384)
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            vectors[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return vectors


def pair_embeddings(records: list[dict], text: str, max_length: int, cache_dir: Path) -> tuple[np.ndarray, bool]:
    """(pairs, 2, 384): the chosen and the rejected reply of each pair, from the cache when it has them."""
    digest = hashlib.sha256(HH.read_bytes()).hexdigest()[:16]
    cache = cache_dir / f"{digest}-{text}-{max_length}-{len(records)}.npy"
    if cache.exists():
        return np.load(cache), True
    replies = [record[side] for record in records for side in ("chosen", "rejected")]
    turns = [last_user_turn(record["prompt"]) for record in records for _ in range(2)] if text == "turn" else None
    vectors = embed(replies, turns, max_length).reshape(len(records), 2, -1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npy")
    np.save(partial, vectors)
    partial.rename(cache)
    return vectors, False


def split_by_prompt(records: list[dict], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test pair indices, each in file order: the pairs of a seeded 25% of the prompts are the test."""
    prompts = sorted({json.dumps(record["prompt"]) for record in records})
    shuffled = np.random.default_rng(seed).permutation(len(prompts))
    held = {prompts[index] for index in shuffled[: round(HELD_OUT * len(prompts))]}
    is_test = np.array([json.dumps(record["prompt"]) in held for record in records])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def fit_reward(differences: np.ndarray, preferred_first: np.ndarray) -> np.ndarray:
    """w of r(x) = w . e(x): logistic regression without intercept on e(a) - e(b), label 1 where a won."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=L2_C, fit_intercept=False, max_iter=1000)
    return model.fit(differences, preferred_first).coef_[0]


def fifo(margins: list[np.ndarray]) -> np.ndarray:
    """Every key equal: the stable sort keeps id order."""
    return np.zeros(len(margins[-1]))


def uncertainty(margins: list[np.ndarray]) -> np.ndarray:
    """The score gap |r(a) - r(b)| under the current model: smallest first."""
    return np.abs(margins[-1])


def disagreement(margins: list[np.ndarray]) -> np.ndarray:
    """Minus the spread of sigmoid(r_v(a) - r_v(b)) over the last three versions; fifo with fewer than two."""
    if len(margins) < 2:
        return fifo(margins)
    chances = 1.0 / (1.0 + np.exp(-np.stack(margins[-VERSIONS:])))
    return -(chances.max(axis=0) - chances.min(axis=0))


KEYS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "fifo": fifo,
    "uncertainty": uncertainty,
    "disagreement": disagreement,
}  # sort key per candidate, smallest first; ties (and fifo) go in id order


def simulate(
    *, order: str, differences: np.ndarray, pool: np.ndarray, test: np.ndarray, seed: int, seed_labels: int, batch: int
) -> list[tuple[int, float]]:
    """(labelled count, held-out accuracy) after the seed set and each round, until the pool is exhausted.

    ``differences`` is e(chosen) - e(rejected) per pair: the oracle. A pair's orientation is drawn once per
    seed; its label is read only once the pair is chosen."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(differences)) < 0.5
    shown = np.where(flipped[:, None], -differences, differences)  # e(a) - e(b) as the task shows it
    labelled = list(rng.choice(pool, size=seed_labels, replace=False))
    remaining = np.setdiff1d(pool, labelled)  # sorted: id order
    margins_by_version: list[np.ndarray] = []  # r_v(a) - r_v(b) of every pair, one array per version
    curve = []
    while True:
        weights = fit_reward(shown[labelled], ~flipped[labelled])
        margins_by_version.append(shown @ weights)
        curve.append((len(labelled), float(np.mean(differences[test] @ weights > 0))))
        if len(remaining) == 0:
            return curve
        keys = KEYS[order]([margins[remaining] for margins in margins_by_version])
        chosen = np.argsort(keys, kind="stable")[:batch]
        labelled += list(remaining[chosen])
        remaining = np.delete(remaining, chosen)


def labels_needed(curve: list[tuple[int, float]], target: float) -> int:
    """The smallest labelled count from which the accuracy stays at or above the target."""
    needed = curve[-1][0]
    for count, accuracy in reversed(curve):
        if accuracy < target:
            break
        needed = count
    return needed


def curves_table(curves: dict[str, list[list[tuple[int, float]]]]) -> str:
    """Mean accuracy per labelled count, one column per order; the last row is the whole pool."""
    rounds = min(len(curve) for runs in curves.values() for curve in runs)
    lines = ["labels  " + "  ".join(f"{order:>12}" for order in ORDERS)]
    for index in list(range(rounds - 1)) + [-1]:
        counts = {curve[index][0] for runs in curves.values() for curve in runs}
        label = str(counts.pop()) if len(counts) == 1 else "all"
        means = [np.mean([curve[index][1] for curve in curves[order]]) for order in ORDERS]
        lines.append(f"{label:>6}  " + "  ".join(f"{mean:>12.3f}" for mean in means))
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    records = hh_records(limit=args.pairs)
    vectors, cached = pair_embeddings(records, args.text, args.max_length, args.cache_dir)
    embedding_s = time.perf_counter() - started
    text = "the reply alone" if args.text == "reply" else "the last user turn and the reply"
    print(
        f"{len(records)} pairs; embeddings of {text}, all-MiniLM-L6-v2 mean-pooled, {args.max_length} tokens: "
        f"{embedding_s:.1f} s ({'cache' if cached else 'computed'})"
    )
    print(f"reward model: Bradley-Terry linear head on frozen embeddings, L2 logistic regression C = {L2_C}")
    differences = vectors[:, 0] - vectors[:, 1]

    curves: dict[str, list[list[tuple[int, float]]]] = {order: [] for order in ORDERS}
    needed: dict[str, list[int]] = {order: [] for order in ORDERS}
    full, targets = [], []
    for seed in range(args.seeds):
        pool, test = split_by_prompt(records, seed)
        for order in ORDERS:
            curve = simulate(
                order=order, differences=differences, pool=pool, test=test, seed=seed, seed_labels=args.seed_labels,
                batch=args.batch,
            )  # fmt: skip
            curves[order].append(curve)
        full.append(curves["fifo"][-1][-1][1])
        targets.append(0.5 + TARGET_SHARE * (full[-1] - 0.5))
        for order in ORDERS:
            needed[order].append(labels_needed(curves[order][-1], targets[-1]))
        print(
            f"seed {seed}: pool {len(pool)}, test {len(test)}, full-pool accuracy {full[-1]:.3f}, target "
            f"{targets[-1]:.3f}; labels needed " + ", ".join(f"{order} {needed[order][-1]}" for order in ORDERS)
        )

    print(f"\nheld-out accuracy, mean over {args.seeds} seeds (seed set {args.seed_labels}, batch {args.batch}):")
    print(curves_table(curves))
    means = {order: float(np.mean(needed[order])) for order in ORDERS}
    savings = {order: 1.0 - means[order] / means["fifo"] for order in ("uncertainty", "disagreement")}
    best = max(savings, key=savings.get)
    saving = savings[best]
    gaps = np.array(needed["fifo"]) - np.array(needed[best])  # paired per seed: the saving's standard error
    saving_se = float(gaps.std(ddof=1) / np.sqrt(args.seeds) / means["fifo"]) if args.seeds > 1 else None
    print(
        f"\nfull-pool accuracy {np.mean(full):.3f}, target {np.mean(targets):.3f} ({TARGET_SHARE:.0%} of the way "
        f"from 0.5); labels needed: " + ", ".join(f"{order} {means[order]:.0f}" for order in ORDERS)
    )
    verdict = "met" if saving >= GOAL else "not met"
    if saving_se is not None and (saving - saving_se < GOAL <= saving or saving < GOAL <= saving + saving_se):
        verdict += " on the mean, within one standard error (more --seeds narrow it)"
    print(
        f"saving against fifo: uncertainty {savings['uncertainty']:.1%}, disagreement {savings['disagreement']:.1%} "
        f"(best: {best}, standard error {'-' if saving_se is None else f'{saving_se:.1%}'} from the seeds' paired "
        f"differences); goal {GOAL:.0%}: {verdict}; {time.perf_counter() - started:.1f} s in all"
    )
    print(json.dumps({
        "fifo_labels": round(means["fifo"], 1), "uncertainty_labels": round(means["uncertainty"], 1),
        "disagreement_labels": round(means["disagreement"], 1), "saving": round(saving, 4),
        "saving_se": None if saving_se is None else round(saving_se, 4), "best": best,
        "uncertainty_saving": round(savings["uncertainty"], 4),
        "disagreement_saving": round(savings["disagreement"], 4),
        "goal": GOAL, "full_accuracy": round(float(np.mean(full)), 4), "target": round(float(np.mean(targets)), 4),
        "seeds": args.seeds, "pairs": len(records), "text": args.text, "max_length": args.max_length,
        "batch": args.batch, "seed_labels": args.seed_labels, "l2_c": L2_C, "embedding_s": round(embedding_s, 1),
        "embedding_cached": cached, "per_seed": needed,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
