"""A GPU check of the trainer: a few reward-model training steps (pairs/s and the model FLOPs utilisation), the
rollout engines writing responses (tokens/s of each: the loop with a dynamic cache, with a static cache, with
a CUDA-graph decode step, and vLLM where it is installed; and how far each engine's log-probabilities are from
the policy's own), then a few PPO steps (policy, reference, value and reward model: four SmolLM2-135M-sized
models), on CUDA in bf16 with the SmolLM2-135M architecture, printing throughput and peak GPU memory of each.
The weights are random (the architecture and the tokenizer are the real ones): speed and memory do not depend
on them, and the real weights are too big to carry to a machine that cannot download them.

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
    parser.add_argument("--ppo-engine", choices=["loop", "vllm"], default="loop", help="PPO's rollout engine")
    parser.add_argument("--engine-batch", type=int, default=64, help="prompts per engine measurement")
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
    tokens_per_response = mean_tokens(tokenizer, args.sentences if cuda else 2)
    flops = 6 * parameters * figures["responses_per_s"] * tokens_per_response  # forward and backward, per second
    peak = PEAK_BF16_FLOPS.get(next((name for name in PEAK_BF16_FLOPS if name in figures["device"]), ""))
    figures["reward_mfu"] = round(flops / peak, 4) if peak else None
    print(
        f"reward training on {figures['device']}: {figures['parameters'] / 1e6:.1f}M parameters, "
        f"{figures['steps']} steps of {args.prompts_per_batch} prompts x K={args.k} in {figures['seconds']} s: "
        f"{figures['pairs_per_s']} pairs/s, peak GPU memory {figures['peak_gpu_mb']} MB"
    )
    engines = engine_smoke(args, config, tokenizer, cuda)
    for name, engine in engines.items():
        print(f"rollout engine {name}: {engine['tokens_per_s']} tokens/s, log-probability gap {engine['logprob_gap']}")
    figures["engines"] = engines
    ppo = ppo_smoke(args, config, model, tokenizer, cuda)
    print(
        f"PPO on {figures['device']}: {ppo['steps']} iterations of {ppo['batch']} episodes x {ppo['response_tokens']} "
        f"tokens in {ppo['seconds']} s: {ppo['episodes_per_s']} episodes/s, peak GPU memory {ppo['peak_gpu_mb']} MB"
    )
    print(json.dumps({**figures, "ppo": ppo}))


# Dense bf16 tensor-core peaks, by the device's name, for the model FLOPs utilisation.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def mean_tokens(tokenizer, sentences: int) -> float:
    """Tokens in one response of the reward data (its prompt, its text) as the reward trainer reads them."""
    text = "Question 0: explain it well. " + " ".join(SENTENCES[i % 6] for i in range(sentences)) + " (0)"
    return float(len(tokenizer(text)["input_ids"]))


def engine_smoke(args, config, tokenizer, cuda: bool) -> dict:
    """Each rollout engine writes ``--ppo-length`` tokens for ``--engine-batch`` prompts (after one warm-up
    batch, which captures the CUDA graph): tokens per second, and the mean gap between the log-probabilities it
    reports and the policy's own forward pass over the same tokens (bf16 on a GPU: small, not zero)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.rl import response_logprobs
    from training.rollout import LoopEngine, VllmEngine, vllm_available
    from training.sampling import SamplingConfig, sample

    policy_config = copy.deepcopy(config)
    policy_config.architectures = None
    torch.manual_seed(2)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    policy = AutoModelForCausalLM.from_config(policy_config).to(device=device, dtype=dtype).eval()
    batch, length = (args.engine_batch, args.ppo_length) if cuda and not args.quick else (4, 8)
    prompts = [[{"role": "user", "content": f"Question {i}: {SENTENCES[i % 6]} Why?"}] for i in range(batch)]
    settings = SamplingConfig(max_new_tokens=length, temperature=1.0)
    engines = {"loop": LoopEngine(policy), "loop_static_cache": LoopEngine(policy, static_cache=True)}
    folder = tempfile.TemporaryDirectory()
    if cuda:
        engines["loop_cuda_graph"] = LoopEngine(policy, static_cache=True, cuda_graph=True)
    if vllm_available():
        policy.save_pretrained(folder.name)
        tokenizer.save_pretrained(folder.name)
        engines["vllm"] = VllmEngine(folder.name, gpu_memory=0.3, max_model_len=512)
    results = {}
    for name, engine in engines.items():
        sample(policy, tokenizer, prompts, settings, device, engine)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        rollout = sample(policy, tokenizer, prompts, settings, device, engine)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        with torch.no_grad():
            own, _ = response_logprobs(policy, rollout.sequences, rollout.attention_mask, rollout.context, 1.0)
        mask = rollout.mask
        gap = float(((rollout.logprobs - own.float()).abs() * mask).sum() / mask.sum())
        results[name] = {"tokens_per_s": round(float(mask.sum()) / seconds, 1), "logprob_gap": round(gap, 5),
                         "tokens": int(mask.sum()), "seconds": round(seconds, 3)}  # fmt: skip
    folder.cleanup()
    if "loop" in results:
        for name in results:
            results[name]["vs_loop"] = round(results[name]["tokens_per_s"] / results["loop"]["tokens_per_s"], 2)
    return results


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
        rollout_engine=args.ppo_engine, static_cache=cuda, cuda_graph=cuda,
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
        "engine": args.ppo_engine,
        "rollout_logprob_gap": max(entry["rollout_logprob_gap"] for entry in history),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


if __name__ == "__main__":
    main()
