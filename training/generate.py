"""A model writes responses to prompts, for the next round of human comparisons.

Reads ``{"prompt_id", "prompt"}`` records (the ``prompts`` export), samples ``samples`` responses per prompt
in batches with the same sampling loop PPO uses, and writes ``{"prompt_id", "response", "finished"}`` lines
(``finished``: the response ended with EOS rather than at the length limit).
"""

import json
import time
from pathlib import Path

import torch

from training.data import pick_prompts, read_prompts_with_ids
from training.models import causal_lm_for_inference
from training.runtime import MetricsSink, Progress
from training.sampling import SamplingConfig, sample


@torch.no_grad()
def generate_responses(
    model_name: str,
    prompts_path: str | Path,
    output_dir: str | Path,
    *,
    samples: int = 2,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    batch_size: int = 16,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    model=None,
    tokenizer=None,
    max_prompts: int = 0,
) -> dict:
    """Write ``output_dir/responses.jsonl`` and ``output_dir/result.json``; returns the summary. With
    ``max_prompts``, that many prompts drawn at random (seeded) are answered instead of all."""
    progress = Progress(on_metrics, "generate")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress.phase("loading")
    torch.manual_seed(seed)
    prompts = pick_prompts(read_prompts_with_ids(prompts_path), max_prompts, seed)
    model, tokenizer = causal_lm_for_inference(model_name, cache_dir, model, tokenizer)
    device = next(model.parameters()).device
    jobs = [(prompt_id, messages) for prompt_id, messages in prompts for _ in range(samples)]
    config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    progress.phase("generating")
    started, written, finished = time.monotonic(), 0, 0
    partial = output_dir / "responses.jsonl.partial"
    with open(partial, "w", encoding="utf-8") as out:
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            rollout = sample(model, tokenizer, [messages for _, messages in batch], config, device)
            for (prompt_id, _), text, ended in zip(batch, rollout.texts, rollout.has_eos.tolist(), strict=True):
                out.write(json.dumps({"prompt_id": prompt_id, "response": text, "finished": ended}) + "\n")
                written += 1
                finished += int(ended)
            progress.update(written / len(jobs), responses=written)
    partial.rename(output_dir / "responses.jsonl")
    summary = {
        "prompts": len(prompts),
        "responses": written,
        "finished_rate": finished / max(written, 1),
        "seconds": round(time.monotonic() - started, 2),
    }
    (output_dir / "result.json").write_text(
        json.dumps({"responses_path": str(output_dir / "responses.jsonl"), "metrics": summary}, indent=2)
    )
    progress.done(summary)
    return summary
