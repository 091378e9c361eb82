"""Our PPO against TRL's online trainer, ``trl.RLOOTrainer``, on the same work.

Both get the same tiny random-init GPT-2 policy, the same reward model (a GPT-2 sequence classifier over the
same tokenizer; RLOO gets it as ``reward_funcs``), the same prompts, episodes per update, response length,
sampling temperature, KL coefficient and learning rate; one optimisation pass per batch for both and the
same number of updates. RLOO samples ``--generations`` responses per prompt (its baseline needs more than one),
so it sees batch / generations prompts per update. Our PPO also trains a value model.

Each trainer runs in its own process (so peak memory is its own): the time counted is the training loop
alone, after the models are built. Prints episodes per second for each, the ratio (ours / RLOO) and peak
memory (resident set on the CPU, allocated GPU memory on CUDA). The last line is one JSON object.

    python bench/ppo.py            # 24 updates of 64 episodes
    python bench/ppo.py --quick    # 6 updates, under two minutes
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = [f"w{i}" for i in range(500)] + [f"p{i}" for i in range(64)] + ["q"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer updates, the same ratio")
    parser.add_argument("--steps", type=int, default=24, help="updates (default 24)")
    parser.add_argument("--batch", type=int, default=64, help="episodes per update (default 64)")
    parser.add_argument("--generations", type=int, default=4, help="RLOO responses per prompt (default 4)")
    parser.add_argument("--length", type=int, default=64, help="response tokens (default 64, as PPOConfig)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--run", choices=["ours", "rloo"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps = 6
    return args


def models(args):
    from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_reward_model, tiny_tokenizer

    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    policy = tiny_causal_lm(tokenizer, layers=args.layers, hidden=args.hidden, seed=0)
    reward_model = tiny_reward_model(tokenizer, layers=args.layers, hidden=args.hidden, seed=1)
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    return policy, reward_model, tokenizer


def prompts_file(folder: Path) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q p{i} w{i}"}) for i in range(64)))
    return path


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args, folder: Path) -> dict:
    from training.config import PPOConfig
    from training.ppo import train_ppo

    policy, reward_model, tokenizer = models(args)
    config = PPOConfig(
        steps=args.steps, batch_size=args.batch, mini_batch_size=args.batch, ppo_epochs=1, learning_rate=1e-5,
        max_new_tokens=args.length, temperature=1.0, kl_coef=0.05, missing_eos_penalty=0.0, max_prompt_length=64,
    )  # fmt: skip
    result = train_ppo(
        config, prompts_file(folder), folder / "ours", policy=policy, tokenizer=tokenizer,
        reward_model=reward_model, reward_tokenizer=tokenizer, resume=False,
    )  # fmt: skip
    seconds = result.metrics["seconds"]
    return {"episodes_per_s": args.steps * args.batch / seconds, "seconds": seconds, "peak_mb": peak_memory_mb()}


def run_rloo(args, folder: Path) -> dict:
    import datasets
    import torch
    import trl
    from transformers import TrainerCallback

    policy, reward_model, tokenizer = models(args)
    # RLOO builds its reference model from the policy's path: give it one.
    policy.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    clock = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            clock["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            clock["end"] = time.perf_counter()

    config = trl.RLOOConfig(
        output_dir=str(folder / "rloo"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1, num_generations=args.generations, num_iterations=1, steps_per_generation=1,
        max_completion_length=args.length, temperature=1.0, top_p=1.0, top_k=0, beta=0.05, learning_rate=1e-5,
        logging_steps=args.steps, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    prompts = datasets.Dataset.from_list([{"prompt": f"q p{i} w{i}\n\n"} for i in range(64)])
    trainer = trl.RLOOTrainer(
        model=str(folder / "policy"), reward_funcs=reward_model, args=config, train_dataset=prompts,
        processing_class=tokenizer, reward_processing_classes=tokenizer, callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    seconds = clock["end"] - clock["start"]
    return {"episodes_per_s": args.steps * args.batch / seconds, "seconds": seconds, "peak_mb": peak_memory_mb()}


def child(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        result = (run_ours if args.run == "ours" else run_rloo)(args, Path(folder))
    print(json.dumps(result))


def main() -> None:
    args = parse_args()
    if args.run:
        child(args)
        return
    forwarded = [f"--steps={args.steps}", f"--batch={args.batch}", f"--generations={args.generations}",
                 f"--length={args.length}", f"--layers={args.layers}", f"--hidden={args.hidden}"]  # fmt: skip
    results = {}
    for name in ("rloo", "ours"):
        done = subprocess.run(
            [sys.executable, __file__, f"--run={name}", *forwarded],
            capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )  # fmt: skip
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{name:>4}: {results[name]['episodes_per_s']:.1f} episodes/s "
            f"({args.steps} updates of {args.batch} episodes in {results[name]['seconds']:.1f} s), "
            f"peak {results[name]['peak_mb']:.0f} MB"
        )
    ratio = results["ours"]["episodes_per_s"] / results["rloo"]["episodes_per_s"]
    print(f"ratio (ours / RLOO): {ratio:.2f}")
    print(
        json.dumps(
            {
                "ratio": round(ratio, 3),
                "ours_episodes_per_s": round(results["ours"]["episodes_per_s"], 2),
                "rloo_episodes_per_s": round(results["rloo"]["episodes_per_s"], 2),
                "ours_peak_mb": round(results["ours"]["peak_mb"], 1),
                "rloo_peak_mb": round(results["rloo"]["peak_mb"], 1),
                "steps": args.steps,
                "episodes_per_update": args.batch,
                "response_tokens": args.length,
                "rloo_generations_per_prompt": args.generations,
            }
        )
    )


if __name__ == "__main__":
    main()
