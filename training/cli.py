"""``python -m training reward|sft|ppo ...``: the same functions the workers run, with a progress bar for people
and one JSON line of metrics per logging step for programs (``--metrics FILE``)."""

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from tqdm import tqdm

from training.config import PPOConfig, RewardConfig, SFTConfig
from training.data import DataError
from training.models import ModelNotFound
from training.runtime import process_rank, write_error

# Errors in what the user gave (a file, a model name or path, a setting): a one-line message and exit code 2.
# OSError is here because transformers raises it for a model it cannot find; a full disk raises it too. Anything
# else (a bug, the GPU) keeps its traceback and exits 1. Both leave the error in OUT/error.json for the app.
USER_ERRORS = (DataError, ModelNotFound, OSError, ValueError)


class Metrics:
    """Where the trainer's lines go: appended to ``--metrics`` as JSON (when given) and shown on a progress bar
    when a person watches; by the first process only, when ``accelerate launch`` starts several. Remembers the
    phase, for the error report."""

    def __init__(self, path: Path | None, show: tuple[str, ...] = ()) -> None:
        self.path, self.show, self.phase, self.file = path, show, "", None
        self.writes = process_rank() == 0
        self.postfix: dict[str, str] = {}
        self.bar = tqdm(
            total=1.0, unit="", bar_format="{l_bar}{bar}| {postfix}", disable=not (self.writes and sys.stderr.isatty())
        )

    def __enter__(self) -> "Metrics":
        if self.path and self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self.file:
            self.file.close()

    def __call__(self, line: dict) -> None:
        self.phase = line.get("phase", self.phase)
        if not self.writes:
            return
        if self.file:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()
        if line.get("event") == "done":
            return
        self.postfix["phase"] = self.phase
        self.postfix.update({key: f"{line[key]:.4g}" for key in self.show if isinstance(line.get(key), int | float)})
        if "eta_s" in line:
            self.postfix["eta"] = f"{line['eta_s']:.0f}s"
        else:
            self.postfix.pop("eta", None)
        if "progress" in line:
            self.bar.n = line["progress"]
            self.bar.set_postfix(self.postfix)
        if "eval_accuracy" in line and "epoch" in line:
            self.bar.write(
                f"epoch {line['epoch']}: held-out accuracy {line['eval_accuracy']:.3f}, loss {line['eval_loss']:.4f}"
            )


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="the output folder (a model goes to OUT/model)")
    parser.add_argument("--metrics", type=Path, help="append one JSON line of metrics per logging step here")
    parser.add_argument(
        "--cache-dir", type=Path, default=os.environ.get("RLHF_STUDIO_CACHE"), help="where converted models are kept"
    )


def _reward_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RewardConfig()
    parser.add_argument("--data", required=True, type=Path, help="a ranking or preference export (JSONL or Parquet)")
    _common_arguments(parser)
    parser.add_argument("--model", default=defaults.model, help="a named default, a Hugging Face id or a local path")
    parser.add_argument("--reference", type=Path, help="an sft export whose replies set the reward's zero")
    parser.add_argument("--baseline", help="a reward model to evaluate on the same held-out prompts, for comparison")
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


def run_reward(args: argparse.Namespace, metrics: Metrics) -> dict:
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
    metrics.show = ("loss", "accuracy")
    result = train_reward_model(
        config, args.data, args.out, reference_path=args.reference, on_metrics=metrics, cache_dir=args.cache_dir,
        baseline=args.baseline,
    )  # fmt: skip
    return result.metrics


def _sft_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SFTConfig()
    parser.add_argument("--data", required=True, type=Path, help="an sft export (JSONL or Parquet)")
    _common_arguments(parser)
    parser.add_argument("--model", default=defaults.model, help="a named default, a Hugging Face id or a local path")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--logging-steps", type=int, default=defaults.logging_steps)
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters, merged into the saved model")


def run_sft(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.sft import train_sft

    config = SFTConfig(
        model=args.model, epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, max_length=args.max_length, seed=args.seed,
        logging_steps=args.logging_steps, lora=args.lora,
    )  # fmt: skip
    metrics.show = ("loss",)
    return train_sft(config, args.data, args.out, on_metrics=metrics, cache_dir=args.cache_dir).metrics


def _ppo_arguments(parser: argparse.ArgumentParser) -> None:
    # The fields' own defaults: an instance would have resolved mini_batch_size (0: the whole batch) already.
    defaults = argparse.Namespace(**{name: spec.default for name, spec in PPOConfig.__dataclass_fields__.items()})
    parser.add_argument("--prompts", required=True, type=Path, help="any export with prompts (JSONL or Parquet)")
    _common_arguments(parser)
    parser.add_argument("--policy", default=defaults.policy, help="the policy: a named default, a hub id or a path")
    parser.add_argument("--reward-model", required=True, help="a reward model folder, a hub id or a path")
    parser.add_argument("--ptx-data", type=Path, help="an sft export for PPO-ptx (with --ptx-coef above 0)")
    for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length",
                 "save_every", "seed", "logging_steps", "ptx_batch_size"):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "temperature", "kl_coef", "target_kl", "cliprange", "cliprange_value", "vf_coef",
                 "lam", "gamma", "ptx_coef", "missing_eos_penalty"):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument(
        "--missing-eos", choices=("subtract", "replace"), default=defaults.missing_eos,
        help="a response cut off at --max-new-tokens: its score minus the penalty, or minus the penalty alone",
    )  # fmt: skip
    parser.add_argument("--adaptive-kl", action="store_true", help="steer beta towards --target-kl")
    parser.add_argument("--whiten-rewards", action="store_true")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters on the policy")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds a checkpoint")


def run_ppo(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.ppo import train_ppo

    fields = {name: getattr(args, name) for name in PPOConfig.__dataclass_fields__ if hasattr(args, name)}
    config = PPOConfig(**fields)
    metrics.show = ("score", "kl", "eos_rate")
    result = train_ppo(
        config, args.prompts, args.out, ptx_path=args.ptx_data, on_metrics=metrics,
        cache_dir=args.cache_dir, resume=not args.no_resume,
    )  # fmt: skip
    return result.metrics


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=Path, help="a prompts export (prompt_id and prompt)")
    _common_arguments(parser)
    parser.add_argument("--model", required=True, help="the policy: a named default, a hub id or a path")
    parser.add_argument("--samples", type=int, default=2, help="responses per prompt")
    parser.add_argument("--max-prompts", type=int, default=0, help="answer this many prompts, drawn at random (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)


def run_generate(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.generate import generate_responses

    return generate_responses(
        args.model, args.prompts, args.out, samples=args.samples, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, batch_size=args.batch_size, seed=args.seed, cache_dir=args.cache_dir,
        on_metrics=metrics, max_prompts=args.max_prompts,
    )  # fmt: skip


def _critique_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=Path, help="a prompts export (prompt_id and prompt)")
    parser.add_argument("--principles", required=True, type=Path, help="principles as JSON (the app writes it)")
    _common_arguments(parser)
    parser.add_argument("--model", required=True, help="the model: a named default, a hub id or a path")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--few-shot", type=Path, help="a text file put before every critique prompt")
    parser.add_argument("--max-prompts", type=int, default=0, help="this many prompts, drawn at random (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)


def run_critique(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.cai import run_critique as critique

    return critique(
        args.model, args.prompts, args.principles, args.out, rounds=args.rounds,
        few_shot=args.few_shot.read_text(encoding="utf-8") if args.few_shot else "",
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
        cache_dir=args.cache_dir, on_metrics=metrics, max_prompts=args.max_prompts,
    )  # fmt: skip


def _feedback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comparisons", required=True, type=Path, help="the pairs to label (the app writes it)")
    _common_arguments(parser)
    parser.add_argument("--model", required=True, help="the feedback model: a named default, a hub id or a path")
    parser.add_argument("--chain-of-thought", action="store_true", help="reason first; labels clamped to 0.4..0.6")


def run_feedback(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.cai import run_feedback as feedback

    return feedback(
        args.model, args.comparisons, args.out, chain_of_thought=args.chain_of_thought,
        cache_dir=args.cache_dir, on_metrics=metrics,
    )  # fmt: skip


RUNNERS = {"reward": run_reward, "sft": run_sft, "ppo": run_ppo, "generate": run_generate,
           "critique": run_critique, "feedback": run_feedback}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """``python -m training <command> ...``: one subcommand per algorithm."""
    parser = argparse.ArgumentParser(prog="python -m training", description="RLHF Studio's trainer.")
    commands = parser.add_subparsers(dest="command", required=True)
    _reward_arguments(commands.add_parser("reward", help="train a reward model from rankings"))
    _sft_arguments(commands.add_parser("sft", help="fine-tune a policy on demonstrations"))
    _ppo_arguments(commands.add_parser("ppo", help="tune a policy with PPO against a reward model"))
    _generate_arguments(commands.add_parser("generate", help="write responses to prompts with a policy"))
    _critique_arguments(commands.add_parser("critique", help="critique-and-revise chains (SL-CAI)"))
    _feedback_arguments(commands.add_parser("feedback", help="AI preference labels by principle (RLAIF)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with Metrics(args.metrics) as metrics:
        try:
            summary = RUNNERS[args.command](args, metrics)
        except Exception as error:
            # The trainer's own account of the failure, for the app; then a message or the traceback.
            record = write_error(args.out, error, metrics.phase)
            metrics({"event": "error", **record})
            if isinstance(error, USER_ERRORS):
                print(f"error: {error}", file=sys.stderr)
                return 2
            traceback.print_exc()
            return 1
    print(json.dumps(summary))
    return 0
