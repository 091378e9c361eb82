"""Does PPO's signal reach the product's default policy? SmolLM2-135M-Instruct (the packaged default) is tuned
against a reward model trained on Anthropic HH-RLHF harmless pairs, on the same HH prompts, with PPOConfig's
defaults (response budget, missing-EOS handling, KL coefficient) and only the amount of work set here: steps,
batch size, one PPO epoch instead of four (a CPU's budget) with the learning rate raised to match. It prints
the reward model's mean score of the policy's samples over the first and the last five iterations, the KL to
the reference (against a 10-nat limit), the EOS rate and the time, once with the default missing-EOS handling
and once with the old one (the score replaced by the penalty), one after the other on the same prompts and
seeds.

    python bench/ppo_default_policy.py [--hh FILE] [--reward-model DIR] [--steps N] [--modes subtract,replace] [--quick]

``--hh`` is an HH-RLHF harmless file in TRL's layout (default: the 200 pairs in ``bench/data/``). Without
``--reward-model`` a MiniLM reward model is trained on it first, one epoch. The policy and the reward model are
loaded once and each run starts from a fresh copy of the policy. ``--quick``: a reward model on 64 pairs
(shorter inputs), then 3 iterations of 2 episodes of at most 16 tokens per run: it checks the plumbing and
prints the same figures, which mean little at that size. ``--modes subtract`` measures the default alone (half
the time). The last line is one JSON object.
"""

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _hh import HH, hh_records  # noqa: E402

from training.config import PPOConfig, RewardConfig  # noqa: E402
from training.models import load_causal_lm, load_reward_model  # noqa: E402
from training.ppo import train_ppo  # noqa: E402
from training.reward import train_reward_model  # noqa: E402

KL_LIMIT = 10.0


def write_inputs(hh: Path, folder: Path, limit: int = 0) -> tuple[Path, Path]:
    pairs, prompts = folder / "pairs.jsonl", folder / "prompts.jsonl"
    with open(pairs, "w") as pair_file, open(prompts, "w") as prompt_file:
        for number, record in enumerate(hh_records(hh, limit)):
            pair_file.write(json.dumps(record) + "\n")
            prompt_file.write(json.dumps({"prompt_id": number, "prompt": record["prompt"]}) + "\n")
    return pairs, prompts


def run(mode: str, prompts: Path, out: Path, models: tuple, config: dict, cache: str) -> dict:
    """One PPO run from a fresh copy of the policy, with PPOConfig's defaults but for ``config``."""
    policy, tokenizer, reward_model, reward_tokenizer = models
    started = time.monotonic()

    def iteration(line: dict) -> None:  # each iteration as it ends, so that a run cut short still says something
        if "score" in line and "step" in line:
            print(f"  {mode} {line['step']:>3}: score {line['score']:+.3f} KL {line['kl']:.2f} "
                  f"EOS {line['eos_rate']:.2f} ({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip

    result = train_ppo(
        PPOConfig(missing_eos=mode, seed=0, **config), prompts, out, cache_dir=cache, resume=False,
        policy=copy.deepcopy(policy), tokenizer=tokenizer, reward_model=reward_model,
        reward_tokenizer=reward_tokenizer, on_metrics=iteration,
    )  # fmt: skip
    history = result.history
    window = max(1, min(5, len(history) // 2))
    first = float(np.mean([line["score"] for line in history[:window]]))
    last = float(np.mean([line["score"] for line in history[-window:]]))
    return {
        "mode": mode,
        "window": window,
        "first_score": round(first, 4),
        "last_score": round(last, 4),
        "score_gain": round(last - first, 4),
        "max_kl": round(max(line["kl"] for line in history), 3),
        "kl_to_limit": round(max(line["kl"] for line in history) / KL_LIMIT, 3),
        "eos_rate": round(float(np.mean([line["eos_rate"] for line in history])), 3),
        # Episodes whose reward-model score reached the policy: all when the penalty is subtracted, only those
        # that ended within the budget when it replaces the score.
        "scored_share": 1.0 if mode == "subtract" else round(float(np.mean([line["eos_rate"] for line in history])), 3),
        "seconds": round(time.monotonic() - started, 1),
        "scores": [round(line["score"], 3) for line in history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hh", type=Path, default=HH)
    parser.add_argument("--reward-model", help="a reward model trained on the same data (skips training one)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=1, help="1 on a CPU; PPOConfig's default is 4")
    parser.add_argument(
        "--learning-rate", type=float, default=4e-5,
        help="with one PPO epoch, the update budget of the default four epochs at 1e-5",
    )  # fmt: skip
    parser.add_argument("--cache-dir", default=str(ROOT / "var" / "artefacts" / "cache"))
    parser.add_argument(
        "--modes", default="subtract,replace", help="the missing-EOS handlings to run, in order (default first)"
    )
    parser.add_argument("--quick", action="store_true", help="a small reward model, then 3 short iterations per run")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or set(modes) - {"subtract", "replace"}:
        sys.exit(f"--modes takes subtract, replace or both, not {args.modes!r}.")
    if not args.hh.exists():
        sys.exit(f"No HH-RLHF file at {args.hh}: pass --hh FILE (TRL layout: prompt, chosen, rejected).")
    config = {
        "steps": args.steps, "batch_size": args.batch_size, "ppo_epochs": args.ppo_epochs,
        "learning_rate": args.learning_rate,
    }  # fmt: skip
    if args.quick:
        config = {"steps": 3, "batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 16, "max_prompt_length": 64,
                  "learning_rate": args.learning_rate}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        pairs, prompts = write_inputs(args.hh, folder, limit=64 if args.quick else 200)
        reward_model = args.reward_model
        if reward_model is None:
            print("training a MiniLM reward model on the HH pairs (one epoch) ...", flush=True)
            reward_config = RewardConfig(max_length=128) if args.quick else RewardConfig()
            trained = train_reward_model(reward_config, pairs, folder / "rm")
            print(f"  held-out accuracy {trained.metrics['eval_accuracy']:.3f}", flush=True)
            reward_model = trained.model_dir
        policy, tokenizer = load_causal_lm(PPOConfig.policy, args.cache_dir)
        models = (policy, tokenizer, *load_reward_model(reward_model))
        results = [run(mode, prompts, folder / mode, models, config, args.cache_dir) for mode in modes]
    for result in results:
        print(
            f"{result['mode']:>8}: reward-model score {result['first_score']:+.3f} (first {result['window']} "
            f"iterations) -> {result['last_score']:+.3f} (last {result['window']}), gain {result['score_gain']:+.3f}; "
            f"max KL {result['max_kl']:.2f} nats = {result['kl_to_limit']:.2f} of the {KL_LIMIT:.0f}-nat limit; "
            f"EOS rate {result['eos_rate']:.2f}; episodes whose reward-model score reached the policy "
            f"{result['scored_share']:.2f}; {result['seconds']:.0f} s"
        )
    summary = {"config": config, "defaults": PPOConfig().as_dict(), "runs": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
