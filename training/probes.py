"""Over-optimisation probes for PPO (Gao et al. 2022, "Scaling laws for reward model over-optimization"): a
few prompts held back from training, answered by the policy at the start and at a few points of the run. Each
answer is kept with the reward model's score and its KL to the reference, so that people can later compare
the answers at each point with the starting policy's and see whether a rising proxy score still means better
answers.

Probe answers are drawn with a random stream of their own (the same at every point, so differences come from
the policy) that leaves the training's random state as it was: a run with probes trains as one without."""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from training.config import PPOConfig
from training.data import DataError, read_prompts_with_ids
from training.rl import response_logprobs
from training.runtime import PROBES_FILE
from training.sampling import sample

PROBE_SEED_OFFSET = 7919


@dataclass
class Probes:
    prompts: list[tuple[int, list[dict]]]  # (prompt id, messages), held back from training
    steps: list[int]  # the points: 0 is the starting policy
    path: Path


def probe_prompts(prompts_path: str | Path, prompts: list, config: PPOConfig) -> list[tuple[int, list[dict]]]:
    """``config.probe_prompts`` of the file's prompts drawn with the seed (at most a quarter of them, and at most
    a batch, so that a probe costs no more than one rollout), with their ids; none when the records carry no
    ``prompt_id`` (an export other than ``prompts``)."""
    if not config.probes or not config.probe_prompts:
        return []
    try:
        with_ids = read_prompts_with_ids(prompts_path)
    except (DataError, KeyError):
        return []
    count = min(config.probe_prompts, len(prompts) // 4, config.batch_size)
    if count == 0:
        return []
    return random.Random(config.seed + PROBE_SEED_OFFSET).sample(with_ids, count)


def probe_steps(config: PPOConfig) -> list[int]:
    """0 and ``config.probes`` points spread evenly to the last step."""
    points = {round(index * config.steps / config.probes) for index in range(1, config.probes + 1)}
    return sorted({0} | {point for point in points if point > 0})


def held_back(prompts: list, probes: list[tuple[int, list[dict]]]) -> list:
    """The training prompts: ``prompts`` without the probe prompts."""
    keys = {json.dumps(messages, sort_keys=True) for _, messages in probes}
    kept = [prompt for prompt in prompts if json.dumps(prompt, sort_keys=True) not in keys]
    return kept or prompts


def probes_for(prompts_path: str | Path, prompts: list, config: PPOConfig, output_dir: Path, start: int) -> Probes:
    """The run's probes; a resumed run keeps the probe answers written up to its checkpoint."""
    chosen = probe_prompts(prompts_path, prompts, config)
    path = output_dir / PROBES_FILE
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= start]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return Probes(prompts=chosen, steps=probe_steps(config) if chosen else [], path=path)


def _fork_rng():
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)


@torch.no_grad()
def probe(probes: Probes, step: int, config: PPOConfig, models, accelerator, score_fn) -> dict:
    """The policy's answers to the probe prompts now, each with its score (``score_fn(prompts, texts)``, the
    reward model's as PPO reads it, before any missing-EOS penalty) and KL to the reference (summed over the
    answer's tokens), appended to the probes file; returns the means."""
    policy = accelerator.unwrap_model(models.policy)
    messages = [prompt for _, prompt in probes.prompts]
    device = accelerator.device
    with _fork_rng():
        torch.manual_seed(config.seed + PROBE_SEED_OFFSET)
        with accelerator.autocast():
            rollout = sample(policy, models.tokenizer, messages, config, device, models.engine)
            scores = score_fn(messages, rollout.texts).float().cpu()
            sequences, attention, context, mask = (
                rollout.sequences, rollout.attention_mask, rollout.context, rollout.mask,
            )  # fmt: skip
            logprobs, _ = response_logprobs(policy, sequences, attention, context, config.temperature)
            if models.reference is None:
                with policy.disable_adapter():
                    reference, _ = response_logprobs(policy, sequences, attention, context, config.temperature)
            else:
                reference, _ = response_logprobs(models.reference, sequences, attention, context, config.temperature)
    kl = ((logprobs - reference) * mask).sum(1).float().cpu()
    probes.path.parent.mkdir(parents=True, exist_ok=True)
    with open(probes.path, "a", encoding="utf-8") as out:
        for (prompt_id, _), text, value, divergence, ended in zip(
            probes.prompts, rollout.texts, scores.tolist(), kl.tolist(), rollout.has_eos.tolist(), strict=True
        ):
            record = {"step": step, "prompt_id": prompt_id, "response": text, "score": value, "kl": divergence,
                      "finished": bool(ended)}  # fmt: skip
            out.write(json.dumps(record) + "\n")
    return {"step": step, "kl": float(kl.mean()), "score": float(scores.mean())}


def probe_means(path: Path) -> list[dict]:
    """Each probe point's mean KL and score, in step order, from the probes file."""
    if not path.exists():
        return []
    by_step: dict[int, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step.setdefault(record["step"], []).append(record)
    return [
        {
            "step": step,
            "kl": sum(record["kl"] for record in records) / len(records),
            "score": sum(record["score"] for record in records) / len(records),
            "answers": len(records),
        }
        for step, records in sorted(by_step.items())
    ]
