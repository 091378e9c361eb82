"""A GPU check of the trainer: a few reward-model training steps, then a few PPO steps (policy, reference,
value and reward model: four SmolLM2-135M-sized models) on CUDA in bf16 with the SmolLM2-135M architecture,
printing throughput and peak GPU memory of each. The weights are random (the architecture
and the tokenizer are the real ones): speed and memory do not depend on them, and the real weights are too
big to carry to a machine that cannot download them.

    python bench/gpu_smoke.py [--model-folder FOLDER] [--quick]

FOLDER holds SmolLM2's config.json and tokenizer files (its weights are not read); by default the folder
that `training.models.resolve_model("smollm2-135m-instruct")` converts once. On a machine without CUDA it
runs a few steps of a smaller model of the same family on the CPU, which checks the script rather than the
GPU. The last line is one JSON object.
"""

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "The committee reviewed the proposal and asked for a clearer budget.",
    "Sunlight scatters off air molecules, and blue light scatters the most.",
    "A careful answer names its sources and admits what it does not know.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Rivers carve valleys slowly, over many thousands of years.",
    "Good code reads top to bottom and says what it does.",
]


def write_rankings(path: Path, prompts: int, k: int, sentences_per_response: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as out:
        for index in range(prompts):
            responses = [
                " ".join(rng.choice(SENTENCES) for _ in range(sentences_per_response)) + f" ({r})" for r in range(k)
            ]
            out.write(json.dumps({"prompt": f"Question {index}: explain it well.", "responses": responses,
                                  "ranking": [[r] for r in range(k)]}) + "\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-folder", type=Path, help="default: the converted smollm2-135m-instruct folder")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--prompts-per-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sentences", type=int, default=16, help="sentences per response (about 14 tokens each)")
    parser.add_argument("--ppo-steps", type=int, default=10)
    parser.add_argument("--ppo-batch", type=int, default=64, help="episodes per PPO iteration")
    parser.add_argument("--ppo-length", type=int, default=128, help="response tokens")
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from training.config import RewardConfig
    from training.models import disable_dropout, prepare_tokenizer
    from training.reward import train_reward_model

    if args.model_folder is None:
        from training.models import resolve_model

        args.model_folder = Path(resolve_model("smollm2-135m-instruct", ROOT / "var" / "artefacts" / "cache"))
    cuda = torch.cuda.is_available()
    steps = args.steps if cuda and not args.quick else 4
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(args.model_folder))
    config = AutoConfig.from_pretrained(args.model_folder, num_labels=1)
    config.pad_token_id = tokenizer.pad_token_id
    config.vocab_size = max(config.vocab_size, len(tokenizer))  # room for the added pad token
    if not cuda:  # the CPU only checks the script: a small model of the same family
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 64, 128
        config.num_attention_heads = config.num_key_value_heads = 2
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    disable_dropout(model)
    parameters = sum(parameter.numel() for parameter in model.parameters())

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "rankings.jsonl"
        write_rankings(data, steps * args.prompts_per_batch, args.k, args.sentences if cuda else 2)
        reward_config = RewardConfig(
            epochs=1.0, learning_rate=1e-5, prompts_per_batch=args.prompts_per_batch, eval_fraction=0.0,
            max_length=512, logging_steps=10, normalize=False, bf16=True,
        )  # fmt: skip
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = train_reward_model(reward_config, data, Path(folder) / "out", model=model, tokenizer=tokenizer)
        seconds = time.perf_counter() - started
    figures = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "parameters": parameters,
        "k": args.k,
        "prompts_per_batch": args.prompts_per_batch,
        "steps": result.metrics["steps"],
        "seconds": round(seconds, 2),
        "pairs_per_s": round(result.metrics["pairs_per_s"], 1),
        "responses_per_s": round(result.metrics["pairs_per_s"] * args.k / (args.k * (args.k - 1) / 2), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
    }
    print(
        f"reward training on {figures['device']}: {figures['parameters'] / 1e6:.1f}M parameters, "
        f"{figures['steps']} steps of {args.prompts_per_batch} prompts x K={args.k} in {figures['seconds']} s: "
        f"{figures['pairs_per_s']} pairs/s, peak GPU memory {figures['peak_gpu_mb']} MB"
    )
    ppo = ppo_smoke(args, config, model, tokenizer, cuda)
    print(
        f"PPO on {figures['device']}: {ppo['steps']} iterations of {ppo['batch']} episodes x {ppo['response_tokens']} "
        f"tokens in {ppo['seconds']} s: {ppo['episodes_per_s']} episodes/s, peak GPU memory {ppo['peak_gpu_mb']} MB"
    )
    print(json.dumps({**figures, "ppo": ppo}))


def ppo_smoke(args, config, reward_model, tokenizer, cuda: bool) -> dict:
    """A policy of the same architecture against the reward model just trained (same tokenizer, so the value
    model starts from it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.config import PPOConfig
    from training.models import disable_dropout
    from training.ppo import train_ppo

    policy_config = copy.deepcopy(config)
    policy_config.architectures = None
    torch.manual_seed(1)
    policy = AutoModelForCausalLM.from_config(policy_config)
    disable_dropout(policy)
    steps = args.ppo_steps if cuda and not args.quick else 2
    batch = args.ppo_batch if cuda else 4
    length = args.ppo_length if cuda else 8
    ppo_config = PPOConfig(
        steps=steps, batch_size=batch, mini_batch_size=batch // 2 if cuda else batch, ppo_epochs=2 if cuda else 1,
        max_new_tokens=length, temperature=1.0, learning_rate=1e-6, bf16=True, missing_eos_penalty=1.0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        prompts = Path(folder) / "prompts.jsonl"
        prompts.write_text(
            "\n".join(json.dumps({"prompt": f"Question {i}: {SENTENCES[i % 6]} Why?"}) for i in range(256))
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = train_ppo(
            ppo_config, prompts, Path(folder) / "ppo", policy=policy, tokenizer=tokenizer, reward_model=reward_model,
            reward_tokenizer=tokenizer, resume=False,
        )  # fmt: skip
    history = result.history
    timed = history[1:] or history  # the first iteration includes warm-up
    return {
        "steps": steps,
        "batch": batch,
        "ppo_epochs": ppo_config.ppo_epochs,
        "response_tokens": length,
        "seconds": result.metrics["seconds"],
        "episodes_per_s": round(sum(entry["episodes_per_s"] for entry in timed) / len(timed), 1),
        "mean_response_length": round(sum(entry["response_length"] for entry in history) / len(history), 1),
        "value_model_from": result.metrics["value_model_from"],
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


if __name__ == "__main__":
    main()
