"""Our listwise reward trainer against TRL's RewardTrainer on the same rankings.

K = 4 and K = 9: both train the same random-init model (same seed) on the same K-wise rankings of a task with
a known answer (a response is better the more "good" and the fewer "bad" it holds; 30% of the rankings have
two neighbours swapped, as raters sometimes do), with AdamW, the same learning rate, cosine schedule, epochs
and comparisons per step. TRL gets the C(K,2) pair expansion of each ranking; ours takes each ranking whole,
one forward pass per response.

K = 2 on real text: the Anthropic HH-RLHF harmless pairs in ``bench/data`` (conversations of several turns,
replies of a few to a few hundred tokens) with the default backbone, all-MiniLM-L6-v2, split by prompt (80%
to train, 20% held out). Both read the same text: each pair cut by the default recipe's truncation (the
whole reply and the conversation's last turns; TRL gets the token ids ours reads, so its time leaves
tokenisation out), one epoch, the same learning rate, warm-up, schedule and
pairs per step, both in float32. Where ours gains here is padding and tokenisation: batches of similar
length, each text tokenised once. One split's held-out accuracy has a standard error of 2.5 points (359
pairs) and moves a point or two with the order of the batches alone, so the case runs on three splits (split
and seed 0, 1, 2; ``--quick``: one) and compares the mean accuracies.

Both are scored on the same held-out prompts with the same pairwise accuracy. Prints pairs per second for
both, their ratio, and held-out accuracy for each case; the last line is one JSON object.

    python bench/reward.py [--quick]
"""

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = [f"w{i}" for i in range(40)] + ["good", "bad"]
NOISE = 0.3  # share of rankings with two neighbours swapped, so that held-out accuracy says something


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="240 rankings per K instead of 400")
    parser.add_argument("--prompts", type=int, default=400, help="rankings per K (default 400)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--prompts-per-batch", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hh-pairs", type=int, default=0, help="HH pairs to use (default 0: all 1,797)")
    parser.add_argument("--max-length", type=int, help="tokens per text in the HH case (default: the recipe's)")
    parser.add_argument("--hh-splits", type=int, default=3, help="HH splits (seeds 0, 1, ...) to average over")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one case and print its figures
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.epochs, args.hh_pairs, args.hh_splits = 240, 2.0, 400, 1
    return args


def value(text: str) -> int:
    words = text.split()
    return words.count("good") - words.count("bad")


def write_rankings(path: Path, prompts: int, k: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as out:
        for index in range(prompts):
            responses = []
            while len(responses) < k:  # distinct values, so rankings have no ties and C(K,2) pairs
                candidate = " ".join(rng.choice(WORDS) for _ in range(24))
                if value(candidate) not in {value(r) for r in responses}:
                    responses.append(candidate)
            order = sorted(range(k), key=lambda i: -value(responses[i]))
            if rng.random() < NOISE:  # raters disagree now and then: swap two neighbours
                at = rng.randrange(k - 1)
                order[at], order[at + 1] = order[at + 1], order[at]
            out.write(
                json.dumps({"prompt": f"p{index}", "responses": responses, "ranking": [[i] for i in order]}) + "\n"
            )


def hh_pairs(limit: int) -> list:
    from _hh import hh_records

    from training.data import RankedPrompt

    return [RankedPrompt(r["prompt"], [r["chosen"], r["rejected"]], [[0], [1]]) for r in hh_records(limit=limit)]


def run_hh(args: argparse.Namespace, folder: Path, seed: int) -> dict:
    """K = 2 on the HH pairs with MiniLM: ours and TRL's on the same cut text, same epochs and schedule."""
    import torch
    from accelerate.utils import set_seed
    from datasets import Dataset as HFDataset
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer

    from training.config import RewardConfig
    from training.data import Dataset
    from training.models import load_reward_model
    from training.reward import Reading, evaluate, quality, tokenize, train_reward_model
    from training.reward.inputs import pad

    train, held_out = Dataset(hh_pairs(args.hh_pairs)).split(0.2, seed=seed)
    train_file = folder / "hh-train.jsonl"
    train_file.write_text(
        "".join(json.dumps({"prompt": e.prompt, "responses": e.responses, "ranking": e.ranking}) + "\n" for e in train)
    )
    config = RewardConfig(
        max_length=args.max_length or RewardConfig.max_length,
        epochs=1,
        eval_fraction=0.0,
        normalize=False,
        logging_steps=1_000_000,
        seed=seed,
    )  # the default CPU recipe's truncation, one epoch for both
    set_seed(seed)
    ours_model, tokenizer = load_reward_model("minilm-l6")
    started = time.perf_counter()
    train_reward_model(config, train_file, folder / "ours-hh", model=ours_model, tokenizer=tokenizer)
    ours_seconds = time.perf_counter() - started
    ours_accuracy = evaluate(ours_model, held_out, tokenizer, config)["eval_accuracy"]

    def rows(examples) -> list:
        """Each pair's two texts as ours reads them: TRL gets the same token ids, already cut (it would drop a
        pair longer than its limit, not cut it)."""
        return tokenize(
            tokenizer, [e.prompt for e in examples for _ in e.responses],
            [reply for e in examples for reply in e.responses], Reading.of(config),
        )  # fmt: skip

    train_rows = rows(train)
    pairs = [
        {"chosen_input_ids": better.input_ids, "rejected_input_ids": worse.input_ids}
        for better, worse in zip(train_rows[0::2], train_rows[1::2], strict=True)
    ]
    set_seed(seed)
    trl_model, _ = load_reward_model("minilm-l6")
    started = time.perf_counter()
    # Not TRL's default bf16: float32 like ours (bf16 on a CPU is fast on some chips and 30 times slower on others)
    trl_args = TRLConfig(
        output_dir=str(folder / "trl-hh"), num_train_epochs=1, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.prompts_per_batch, lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio, weight_decay=0.0, max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, report_to=[], save_strategy="no", logging_steps=1_000_000, use_cpu=True,
        bf16=False, seed=seed, disable_tqdm=True, center_rewards_coefficient=None, dataloader_drop_last=False,
    )  # fmt: skip
    trainer = RewardTrainer(
        model=trl_model, args=trl_args, processing_class=tokenizer, train_dataset=HFDataset.from_list(pairs)
    )
    kept = len(trainer.train_dataset)
    trainer.train()
    trl_seconds = time.perf_counter() - started

    held_rows = rows(held_out)
    scores = torch.zeros(len(held_rows))
    trl_model.eval()
    with torch.inference_mode():
        for start in range(0, len(held_rows), 32):
            inputs = pad(held_rows[start : start + 32], tokenizer.pad_token_id)
            inputs.pop("token_type_ids", None)  # the pair layout's segments: TRL's collator passes none
            scores[start : start + 32] = trl_model(**inputs).logits.squeeze(-1)
    trl_accuracy = quality.accuracy(scores[0::2] - scores[1::2])
    return {
        "seed": seed,
        "ours_accuracy": round(ours_accuracy, 4),
        "trl_accuracy": round(trl_accuracy, 4),
        "train_pairs": len(train),
        "trl_pairs_kept": kept,
        "held_out_pairs": len(held_out),
        "ours_seconds": round(ours_seconds, 1),
        "trl_seconds": round(trl_seconds, 1),
        "max_length": config.max_length,
        "prompt_turns": config.prompt_turns,
        "layout": config.layout,
    }


def comparison(ours_rate: float, trl_rate: float, ours_accuracy: float, trl_accuracy: float) -> dict:
    return {
        "ratio": round(ours_rate / trl_rate, 2),
        "ours_pairs_per_s": round(ours_rate, 2),
        "trl_pairs_per_s": round(trl_rate, 2),
        "ours_accuracy": round(ours_accuracy, 4),
        "trl_accuracy": round(trl_accuracy, 4),
    }


def hh_summary(splits: list[dict]) -> dict:
    """The splits together: pairs per second over all of them, mean accuracies and their gap."""
    ours_rate = sum(split["train_pairs"] for split in splits) / sum(split["ours_seconds"] for split in splits)
    trl_rate = sum(split["trl_pairs_kept"] for split in splits) / sum(split["trl_seconds"] for split in splits)
    ours = sum(split["ours_accuracy"] for split in splits) / len(splits)
    trl = sum(split["trl_accuracy"] for split in splits) / len(splits)
    return {
        **comparison(ours_rate, trl_rate, ours, trl),
        "accuracy_gap_points": round(100 * (trl - ours), 2),
        "held_out_pairs": splits[0]["held_out_pairs"],
        "splits": splits,
    }


def run(k: int, args: argparse.Namespace, folder: Path) -> dict:
    from datasets import Dataset as HFDataset
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer

    from training.config import RewardConfig
    from training.data import read_rankings
    from training.models import tiny_reward_model, tiny_tokenizer
    from training.reward import evaluate, train_reward_model
    from training.text import prompt_text

    data = folder / f"rankings-k{k}.jsonl"
    write_rankings(data, args.prompts, k, seed=k)
    tokenizer = tiny_tokenizer(WORDS + [f"p{i}" for i in range(args.prompts)])
    config = RewardConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, prompts_per_batch=args.prompts_per_batch,
        eval_fraction=0.2, max_length=64, logging_steps=1_000_000, normalize=False, seed=0,
    )  # fmt: skip
    train, held_out = read_rankings(data).split(config.eval_fraction, config.seed)
    train_file = folder / f"train-k{k}.jsonl"
    train_file.write_text(
        "".join(json.dumps({"prompt": e.prompt, "responses": e.responses, "ranking": e.ranking}) + "\n" for e in train)
    )
    config.eval_fraction = 0.0

    # Ours: each ranking whole.
    ours_model = tiny_reward_model(tokenizer, layers=args.layers, hidden=args.hidden, seed=1)
    started = time.perf_counter()
    result = train_reward_model(config, train_file, folder / f"ours-k{k}", model=ours_model, tokenizer=tokenizer)
    ours_seconds = time.perf_counter() - started
    pairs = sum(len(example.pairs()) for example in train)
    ours_pairs = pairs * args.epochs
    ours_accuracy = evaluate(ours_model, held_out, tokenizer, config)["eval_accuracy"]

    # TRL: the C(K,2) pair expansion, as every pairwise trainer reads rankings. The same text as ours.
    eos = tokenizer.eos_token
    rows = [
        {
            "chosen": f"{prompt_text(e.prompt)}\n\n{e.responses[w]} {eos}",
            "rejected": f"{prompt_text(e.prompt)}\n\n{e.responses[lose]} {eos}",
        }
        for e in train
        for w, lose in e.pairs()
    ]
    started = time.perf_counter()  # TRL tokenizes when the trainer is built: that is part of its time
    trl_model = tiny_reward_model(tokenizer, layers=args.layers, hidden=args.hidden, seed=1)
    pairs_per_step = config.prompts_per_batch * math.comb(k, 2)
    # Not TRL's default bf16: float32 like ours (bf16 on a CPU is fast on some chips and 30 times slower on others)
    trl_args = TRLConfig(
        output_dir=str(folder / f"trl-k{k}"), num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        per_device_train_batch_size=pairs_per_step, lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio,
        weight_decay=0.0, max_grad_norm=config.max_grad_norm, max_length=64, report_to=[], save_strategy="no",
        logging_steps=1_000_000, use_cpu=True, bf16=False, seed=0, disable_tqdm=True, center_rewards_coefficient=None,
        dataloader_drop_last=False,
    )  # fmt: skip
    trainer = RewardTrainer(
        model=trl_model, args=trl_args, train_dataset=HFDataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    trl_seconds = time.perf_counter() - started
    trl_pairs = len(rows) * args.epochs
    trl_accuracy = evaluate(trl_model, held_out, tokenizer, config)["eval_accuracy"]

    ours_rate = ours_pairs / ours_seconds
    trl_rate = trl_pairs / trl_seconds
    return {
        **comparison(ours_rate, trl_rate, ours_accuracy, trl_accuracy),
        "train_pairs": pairs,
        "held_out_pairs": sum(len(example.pairs()) for example in held_out),
        "ours_seconds": round(ours_seconds, 2),
        "trl_seconds": round(trl_seconds, 2),
        "ours_steps": result.metrics["steps"],
    }


def main() -> None:
    args = parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as folder:
            if args.child.startswith("hh"):
                figures = run_hh(args, Path(folder), seed=int(args.child[2:]))
            else:
                figures = run(int(args.child), args, Path(folder))
            print(json.dumps(figures))
        return
    # Each case in a process of its own: TRL's and our trainer each set up accelerate's process-wide state.
    results = {}
    for label, cases in (("K4", ["4"]), ("K9", ["9"]), ("K2_hh", [f"hh{seed}" for seed in range(args.hh_splits)])):
        runs = []
        for case in cases:
            command = [sys.executable, __file__, "--child", case, *sys.argv[1:]]
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise SystemExit(f"{label} ({case}) failed:\n{completed.stderr[-3000:]}")
            runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        figures = hh_summary(runs) if label == "K2_hh" else runs[0]
        results[label] = figures
        print(
            f"{label}: ours {figures['ours_pairs_per_s']} pairs/s, TRL {figures['trl_pairs_per_s']} pairs/s, "
            f"ratio {figures['ratio']}; held-out accuracy ours {figures['ours_accuracy']:.3f}, "
            f"TRL {figures['trl_accuracy']:.3f} ({figures['held_out_pairs']} pairs)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
