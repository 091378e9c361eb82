"""``python -m training reward|sft|ppo ...``: the same functions the workers run, with a progress bar for people
and one JSON line of metrics per logging step for programs (``--metrics FILE``)."""

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import os
import sys
import textwrap
import traceback
import typing
from pathlib import Path

from accelerate import PartialState
from tqdm import tqdm

from training.config import (
    REWARD_PRESETS,
    ROLLOUT_FIELDS,
    CritiqueConfig,
    DPOConfig,
    EvaluateConfig,
    FeedbackConfig,
    GenerateConfig,
    PPOConfig,
    RewardConfig,
    ScoreConfig,
    SFTConfig,
    reward_preset,
)
from training.data import DataError
from training.models import ModelNotFound
from training.runtime import Watchdog, process_rank, write_error
from training.store import StoreError, is_store_url, materialise
from training.tracking import Tracking, trackers_for

# Errors in what the user gave (a file, a model name or path, a setting): a one-line message and exit code 2.
# OSError is here because transformers raises it for a model it cannot find; a full disk raises it too. Anything
# else (a bug, the GPU) keeps its traceback and exits 1. Both leave the error in OUT/error.json for the app.
USER_ERRORS = (DataError, ModelNotFound, OSError, StoreError, ValueError)


class Metrics:
    """Where the trainer's lines go: appended to ``--metrics`` as JSON (when given), to the run's trackers
    (``tracking``: TensorBoard, MLflow, W&B) and shown on a progress bar when a person watches; by the first
    process only, when ``accelerate launch`` starts several. Remembers the phase, for the error report."""

    def __init__(self, path: Path | None, show: tuple[str, ...] = (), tracking: Tracking | None = None) -> None:
        self.path, self.show, self.phase = path, show, ""
        self.file: typing.TextIO | None = None
        self.writes = process_rank() == 0
        self.tracking = tracking if self.writes else None
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
        if self.tracking:
            self.tracking.log(line)
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


def _field_help(config: type) -> dict[str, str]:
    """Each field's explanation: the string literal written under it in the dataclass."""
    helps = {}
    for cls in reversed([cls for cls in config.__mro__ if dataclasses.is_dataclass(cls)]):
        helps.update(_own_field_help(cls))
    return helps


def _own_field_help(config: type) -> dict[str, str]:
    definition = ast.parse(textwrap.dedent(inspect.getsource(config))).body[0]
    assert isinstance(definition, ast.ClassDef)
    helps = {}
    for node, following in itertools.pairwise(definition.body):
        if (
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):  # fmt: skip
            helps[node.target.id] = " ".join(following.value.value.split()).replace("%", "%%")
    return helps


def config_arguments(
    parser: argparse.ArgumentParser, config: type, *, required: tuple[str, ...] = (), skip: tuple[str, ...] = ()
) -> None:
    """One option per field of the ``config`` dataclass, named after it (``--learning-rate``), typed and
    defaulted by it: ``--name``/``--no-name`` for a flag, the choices of a ``Literal``. ``skip`` names the
    fields given otherwise; ``required`` those without a default here."""
    helps, types = _field_help(config), typing.get_type_hints(config)
    for spec in dataclasses.fields(config):
        if spec.name in skip:
            continue
        kind = types[spec.name]
        options: dict = {"dest": spec.name, "help": helps.get(spec.name)}
        if spec.name in required:
            options["required"] = True
        elif spec.default is dataclasses.MISSING:
            raise TypeError(f"{config.__name__}.{spec.name} has no plain default: skip it and give it otherwise.")
        else:
            options["default"] = spec.default
        if kind in (bool, bool | None):
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            options["choices"] = typing.get_args(kind)
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            raise TypeError(f"{config.__name__}.{spec.name}: no command-line form for {kind}.")
        parser.add_argument(f"--{spec.name.replace('_', '-')}", **options)


INPUT_FILES = ("data", "reference", "prompts", "ptx_data")  # the options that name an export to read


def input_file(value: str) -> Path | str:
    """An export to read: a local path, or a URL in the artefact store (``s3://...#sha256=...``), which
    ``inputs_fetch`` turns into a checked local copy before the run starts."""
    return value if is_store_url(value) else Path(value)


def inputs_fetch(args: argparse.Namespace) -> None:
    """Every export given as a store URL, fetched into the cache folder and checked against its sha256."""
    cache = args.cache_dir or Path.home() / ".cache" / "rlhf-studio"
    for name in INPUT_FILES:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, Path(materialise(value, cache)))


def config_from(config: type, args: argparse.Namespace, **given):
    """The ``config`` dataclass from the parsed options (its checks run), with ``given`` for skipped fields."""
    names = {spec.name for spec in dataclasses.fields(config)} - set(given)
    return config(**{name: getattr(args, name) for name in names if hasattr(args, name)}, **given)


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="the output folder (a model goes to OUT/model)")
    parser.add_argument("--metrics", type=Path, help="append one JSON line of metrics per logging step here")
    parser.add_argument(
        "--run-name", help="the run's name in TensorBoard, MLflow and W&B (default: the output folder's name)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=os.environ.get("RLHF_STUDIO_CACHE"), help="where converted models are kept"
    )


def _reward_arguments(parser: argparse.ArgumentParser, preset: str = "cpu") -> None:
    parser.add_argument(
        "--data", required=True, type=input_file, help="a ranking or preference export (JSONL or Parquet)"
    )
    parser.add_argument(
        "--preset", choices=list(REWARD_PRESETS), default="cpu",
        help="a named recipe (cpu: MiniLM; gpu: SmolLM2-135M) whose settings are the defaults; options given win",
    )  # fmt: skip
    _output_arguments(parser)
    parser.add_argument("--reference", type=input_file, help="an sft export whose replies set the reward's zero")
    parser.add_argument("--baseline", help="a reward model to evaluate on the same held-out prompts, for comparison")
    parser.add_argument("--human-weight", type=float, default=1.0, help="loss weight of human judgements")
    parser.add_argument("--ai-weight", type=float, default=1.0, help="loss weight of AI feedback labels")
    config_arguments(parser, RewardConfig, skip=("source_weights",))
    parser.set_defaults(**reward_preset(preset))


def run_reward(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.reward import train_reward_model

    config = config_from(RewardConfig, args, source_weights={"human": args.human_weight, "ai": args.ai_weight})
    metrics.show = ("loss", "accuracy")
    result = train_reward_model(
        config, args.data, args.out, reference_path=args.reference, on_metrics=metrics, cache_dir=args.cache_dir,
        baseline=args.baseline,
    )  # fmt: skip
    return result.metrics


def _sft_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=input_file, help="an sft export (JSONL or Parquet)")
    _output_arguments(parser)
    config_arguments(parser, SFTConfig)


def run_sft(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.sft import train_sft

    metrics.show = ("loss",)
    config = config_from(SFTConfig, args)
    return train_sft(config, args.data, args.out, on_metrics=metrics, cache_dir=args.cache_dir).metrics


def _dpo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=input_file, help="a preference or ranking export (JSONL or Parquet)"
    )
    _output_arguments(parser)
    config_arguments(parser, DPOConfig)


def run_dpo(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.dpo import train_dpo

    metrics.show = ("loss", "margin")
    config = config_from(DPOConfig, args)
    return train_dpo(config, args.data, args.out, on_metrics=metrics, cache_dir=args.cache_dir).metrics


def _ppo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=input_file, help="any export with prompts (JSONL or Parquet)")
    _output_arguments(parser)
    parser.add_argument("--ptx-data", type=input_file, help="an sft export for PPO-ptx (with --ptx-coef above 0)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds a checkpoint")
    config_arguments(parser, PPOConfig, required=("reward_model",))


def run_ppo(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.ppo import train_ppo

    metrics.show = ("score", "kl", "eos_rate")
    result = train_ppo(
        config_from(PPOConfig, args), args.prompts, args.out, ptx_path=args.ptx_data, on_metrics=metrics,
        cache_dir=args.cache_dir, resume=not args.no_resume,
    )  # fmt: skip
    return result.metrics


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=input_file, help="a prompts export (prompt_id and prompt)")
    _output_arguments(parser)
    config_arguments(parser, GenerateConfig, required=("model",))


def _own_options(config) -> dict:
    """A command's options but its model and its rollout settings, for a function that takes them one by one."""
    options = config.as_dict()
    for name in ("model", *ROLLOUT_FIELDS):
        options.pop(name)
    return options


def run_generate(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.generate import generate_responses

    config = config_from(GenerateConfig, args)
    return generate_responses(
        config.model, args.prompts, args.out, cache_dir=args.cache_dir, on_metrics=metrics,
        engine_settings=config.rollout_settings(), **_own_options(config),
    )  # fmt: skip


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=input_file, help="a prompts export (prompt_id and prompt)")
    parser.add_argument("--versions", required=True, type=Path, help='{"version name": model, ...} as JSON')
    _output_arguments(parser)
    config_arguments(parser, EvaluateConfig, skip=("model",))


def run_evaluate(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.evaluate import answer_eval_prompts, read_versions

    config = config_from(EvaluateConfig, args)
    versions = read_versions(args.versions)
    return answer_eval_prompts(versions, args.prompts, args.out, config, cache_dir=args.cache_dir, on_metrics=metrics)


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--responses", required=True, type=Path, help="responses to score (the app writes them)")
    _output_arguments(parser)
    config_arguments(parser, ScoreConfig, required=("model",))


def run_score(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.score import score_responses

    config = config_from(ScoreConfig, args)
    return score_responses(args.responses, args.out, config, cache_dir=args.cache_dir, on_metrics=metrics)


def _critique_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, type=input_file, help="a prompts export (prompt_id and prompt)")
    parser.add_argument("--principles", required=True, type=Path, help="principles as JSON (the app writes it)")
    parser.add_argument("--few-shot", type=Path, help="a text file put before every critique prompt")
    _output_arguments(parser)
    config_arguments(parser, CritiqueConfig, required=("model",))


def run_critique(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.cai import run_critique as critique

    config = config_from(CritiqueConfig, args)
    return critique(
        config.model, args.prompts, args.principles, args.out,
        few_shot=args.few_shot.read_text(encoding="utf-8") if args.few_shot else "",
        cache_dir=args.cache_dir, on_metrics=metrics, engine_settings=config.rollout_settings(), **_own_options(config),
    )  # fmt: skip


def _feedback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--comparisons", required=True, type=Path, help="the pairs to label (the app writes it)")
    _output_arguments(parser)
    config_arguments(parser, FeedbackConfig, required=("model",))


def run_feedback(args: argparse.Namespace, metrics: Metrics) -> dict:
    from training.cai import run_feedback as feedback

    config = config_from(FeedbackConfig, args).as_dict()
    model = config.pop("model")
    return feedback(model, args.comparisons, args.out, cache_dir=args.cache_dir, on_metrics=metrics, **config)


RUNNERS = {"reward": run_reward, "sft": run_sft, "dpo": run_dpo, "ppo": run_ppo, "generate": run_generate,
           "evaluate": run_evaluate, "score": run_score, "critique": run_critique,
           "feedback": run_feedback}  # fmt: skip


def build_parser(preset: str = "cpu") -> argparse.ArgumentParser:
    """``python -m training <command> ...``: one subcommand per algorithm; ``preset``'s settings are the reward
    command's defaults."""
    parser = argparse.ArgumentParser(prog="python -m training", description="RLHF Studio's trainer.")
    commands = parser.add_subparsers(dest="command", required=True)
    _reward_arguments(commands.add_parser("reward", help="train a reward model from rankings"), preset)
    _sft_arguments(commands.add_parser("sft", help="fine-tune a policy on demonstrations"))
    _dpo_arguments(commands.add_parser("dpo", help="tune a policy on preference pairs directly (DPO)"))
    _ppo_arguments(commands.add_parser("ppo", help="tune a policy with PPO against a reward model"))
    _generate_arguments(commands.add_parser("generate", help="write responses to prompts with a policy"))
    _evaluate_arguments(commands.add_parser("evaluate", help="several policy versions answer the same eval prompts"))
    _score_arguments(commands.add_parser("score", help="a reward model scores responses"))
    _critique_arguments(commands.add_parser("critique", help="critique-and-revise chains (SL-CAI)"))
    _feedback_arguments(commands.add_parser("feedback", help="AI preference labels by principle (RLAIF)"))
    return parser


def _preset(argv: list[str] | None) -> str:
    """The ``--preset`` among the arguments (a first look, before they are parsed against its defaults)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--preset", default="cpu")
    preset = early.parse_known_args(argv)[0].preset
    return preset if preset in REWARD_PRESETS else "cpu"  # an unknown name: the full parse names the choices


def main(argv: list[str] | None = None) -> int:
    args = build_parser(_preset(argv)).parse_args(argv)
    Watchdog.from_environment(args.out).start()  # the trainer dies with the worker that started it
    # The state every process of the run shares (what accelerate's Accelerator sets up anyway), made by all of
    # them together here: accelerate's trackers need it before training starts.
    PartialState()
    tracking = (
        Tracking(trackers_for(args.out, args.run_name or args.out.resolve().name)) if process_rank() == 0 else None
    )
    if tracking:
        tracking.start(vars(args))
    with Metrics(args.metrics, tracking=tracking) as metrics:
        try:
            inputs_fetch(args)
            summary = RUNNERS[args.command](args, metrics)
        except Exception as error:
            # The trainer's own account of the failure, for the app; then a message or the traceback.
            record = write_error(args.out, error, metrics.phase)
            metrics({"event": "error", **record})
            if tracking:
                tracking.finish(failed=True)
            if isinstance(error, USER_ERRORS):
                print(f"error: {error}", file=sys.stderr)
                return 2
            traceback.print_exc()
            return 1
    if tracking:
        tracking.finish(failed=False)
    print(json.dumps(summary))
    return 0
