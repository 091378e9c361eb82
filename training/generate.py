"""A model writes responses to prompts, for the next round of human comparisons.

Reads ``{"prompt_id", "prompt"}`` records (the ``prompts`` export), samples ``samples`` responses per prompt
in batches with the same sampling loop PPO uses, and writes ``{"prompt_id", "response", "finished"}`` lines
(``finished``: the response ended with EOS rather than at the length limit).
"""

import json
import time
from pathlib import Path

import torch

from training.config import GenerateConfig, RolloutConfig
from training.data import pick_prompts, read_prompts_with_ids
from training.models import causal_lm_for_inference
from training.rollout import rollout_engine_for
from training.runtime import RESPONSES_FILE, MetricsSink, Progress, write_result
from training.sampling import SamplingConfig, sample


@torch.no_grad()
def generate_responses(
    model_name: str,
    prompts_path: str | Path,
    output_dir: str | Path,
    *,
    samples: int = GenerateConfig.samples,
    max_new_tokens: int = GenerateConfig.max_new_tokens,
    temperature: float = GenerateConfig.temperature,
    batch_size: int = GenerateConfig.batch_size,
    seed: int = GenerateConfig.seed,
    cache_dir: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    model=None,
    tokenizer=None,
    max_prompts: int = GenerateConfig.max_prompts,
    engine_settings: RolloutConfig | None = None,
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
    engine = rollout_engine_for(model, engine_settings)
    device = next(model.parameters()).device
    jobs = [(prompt_id, messages) for prompt_id, messages in prompts for _ in range(samples)]
    config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    progress.phase("generating")
    started, written, finished = time.monotonic(), 0, 0
    partial = output_dir / f"{RESPONSES_FILE}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            rollout = sample(model, tokenizer, [messages for _, messages in batch], config, device, engine)
            for (prompt_id, _), text, ended in zip(batch, rollout.texts, rollout.has_eos.tolist(), strict=True):
                out.write(json.dumps({"prompt_id": prompt_id, "response": text, "finished": ended}) + "\n")
                written += 1
                finished += int(ended)
            progress.update(written / len(jobs), responses=written)
    partial.rename(output_dir / RESPONSES_FILE)
    summary = {
        "prompts": len(prompts),
        "responses": written,
        "finished_rate": finished / max(written, 1),
        "seconds": round(time.monotonic() - started, 2),
    }
    write_result(output_dir, {"responses_path": str(output_dir / RESPONSES_FILE), "metrics": summary})
    progress.done(summary)
    return summary
