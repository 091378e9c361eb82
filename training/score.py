"""A reward model scores responses: what it thinks of each answer, read the way it was trained to read them.

Reads ``{"response_id", "prompt": [messages], "response"}`` lines and writes ``{"response_id", "score"}`` lines,
in batches of similar length. The product uses the scores to judge comparisons between model versions as the
reward model would.
"""

import json
import time
from pathlib import Path

import torch

from training.config import ScoreConfig
from training.data import DataError
from training.models import load_reward_model
from training.reward.scoring import score
from training.runtime import SCORES_FILE, MetricsSink, Progress, write_result


def read_responses(path: str | Path) -> list[tuple[int, list[dict], str]]:
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows.append((int(record["response_id"]), list(record["prompt"]), str(record["response"])))
            except (KeyError, TypeError, ValueError) as error:
                raise DataError(f"{path.name}, line {number}: {error}") from None
    return rows


@torch.no_grad()
def score_responses(
    responses_path: str | Path,
    output_dir: str | Path,
    config: ScoreConfig,
    *,
    cache_dir: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    model=None,
    tokenizer=None,
) -> dict:
    """Write ``output_dir/scores.jsonl`` and ``result.json``; returns the summary."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(on_metrics, "score")
    progress.phase("loading")
    rows = read_responses(responses_path)
    if model is None or tokenizer is None:
        model, tokenizer = load_reward_model(config.model, cache_dir)
    progress.phase("scoring")
    started = time.monotonic()
    scores = score(
        model, tokenizer, [prompt for _, prompt, _ in rows], [reply for _, _, reply in rows], config.max_length,
        config.batch_size, progress,
    ).tolist() if rows else []  # fmt: skip
    partial = output_dir / f"{SCORES_FILE}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        for (response_id, _, _), value in zip(rows, scores, strict=True):
            out.write(json.dumps({"response_id": response_id, "score": value}) + "\n")
    partial.rename(output_dir / SCORES_FILE)
    summary = {"responses": len(rows), "seconds": round(time.monotonic() - started, 2)}
    write_result(output_dir, {"scores_path": str(output_dir / SCORES_FILE), "metrics": summary})
    progress.done(summary)
    return summary
