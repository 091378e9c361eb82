"""``python -m training reward ...``: the same functions the workers run, with a progress bar for people
and one JSON line of metrics per logging step for programs (``--metrics FILE``)."""

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from training.config import RewardConfig
from training.data import DataError
from training.models import ModelNotFound


def _reward_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RewardConfig()
    parser.add_argument("--data", required=True, type=Path, help="a ranking or preference export (JSONL or Parquet)")
    parser.add_argument("--out", required=True, type=Path, help="the output folder (the model goes to OUT/model)")
    parser.add_argument("--model", default=defaults.model, help="a named default, a Hugging Face id or a local path")
    parser.add_argument("--reference", type=Path, help="an sft export whose replies set the reward's zero")
    parser.add_argument("--metrics", type=Path, help="append one JSON line of metrics per logging step here")
    parser.add_argument(
        "--cache-dir", type=Path, default=os.environ.get("RLHF_STUDIO_CACHE"), help="where converted models are kept"
    )
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--prompts-per-batch", type=int, default=defaults.prompts_per_batch)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--eval-fraction", type=float, default=defaults.eval_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--logging-steps", type=int, default=defaults.logging_steps)
    parser.add_argument("--human-weight", type=float, default=1.0, help="loss weight of human judgements")
    parser.add_argument("--ai-weight", type=float, default=1.0, help="loss weight of AI feedback labels")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    parser.add_argument("--no-normalize", action="store_true", help="leave the scores' zero where training put it")


def run_reward(args: argparse.Namespace) -> int:
    from training.reward import train_reward_model

    config = RewardConfig(
        model=args.model,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        prompts_per_batch=args.prompts_per_batch,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_length=args.max_length,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        logging_steps=args.logging_steps,
        source_weights={"human": args.human_weight, "ai": args.ai_weight},
        lora=args.lora,
        normalize=not args.no_normalize,
    )
    metrics_file = open(args.metrics, "a", encoding="utf-8") if args.metrics else None  # noqa: SIM115
    bar = tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {postfix}", disable=not sys.stderr.isatty())

    def on_metrics(line: dict) -> None:
        if metrics_file:
            metrics_file.write(json.dumps(line) + "\n")
            metrics_file.flush()
        if line.get("event") == "done":
            return
        if "progress" in line:
            bar.n = line["progress"]
            bar.set_postfix(loss=f"{line['loss']:.4f}", acc=f"{line['accuracy']:.3f}", eta=f"{line['eta_s']:.0f}s")
        elif "eval_accuracy" in line:
            bar.write(
                f"epoch {line['epoch']}: held-out accuracy {line['eval_accuracy']:.3f}, loss {line['eval_loss']:.4f}"
            )

    try:
        result = train_reward_model(
            config, args.data, args.out, reference_path=args.reference, on_metrics=on_metrics, cache_dir=args.cache_dir
        )
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    print(json.dumps(result.metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="RLHF Studio's trainer.")
    commands = parser.add_subparsers(dest="command", required=True)
    _reward_arguments(commands.add_parser("reward", help="train a reward model from rankings"))
    args = parser.parse_args(argv)
    try:
        if args.command == "reward":
            return run_reward(args)
    except (DataError, ModelNotFound, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1
