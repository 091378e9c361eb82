"""The reward model's training loop: data, model, optimiser, then epochs of (forward, listwise loss, update,
log) with a held-out evaluation after each; the best epoch kept (early stopping), its temperature fitted, its
quality measured, its scores normalised, the model saved."""

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from training.config import RewardConfig
from training.data import DataError, RankedPrompt, Reference, read_rankings, read_references
from training.models import load_reward_model
from training.reward import quality
from training.reward.inputs import Encoded, LengthGroupedBatches, Reading, collate, tokenize_examples
from training.reward.loss import listwise_loss, rewards_of
from training.reward.scoring import Predictions, evaluate, normalize, predict, quality_report, summary
from training.runtime import HELD_OUT_JUDGEMENTS, MODEL_DIR, MetricsSink, Progress, write_result

# --- training ------------------------------------------------------------------------------------------------


@dataclass
class RewardResult:
    model_dir: str
    metrics: dict
    config: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _accelerator(config: RewardConfig) -> Accelerator:
    use_cuda = torch.cuda.is_available()
    if AcceleratorState._shared_state:
        # Another trainer set accelerate up in this process before (a notebook, a test session): start afresh
        # so that this run's precision and device apply. A run launched by the app has a process to itself.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision="bf16" if use_cuda and config.bf16 and torch.cuda.is_bf16_supported() else "no",
        cpu=not use_cuda,
    )


def _with_lora(model, config: RewardConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout
    )
    return get_peft_model(model, lora)


class _Window:
    """Loss and accuracy over the micro-batches since the last logging step: each curve point is the mean of
    the steps it covers, however many there were."""

    def __init__(self) -> None:
        self.loss, self.batches, self.right, self.pairs = 0.0, 0, 0.0, 0

    def add(self, loss: float, right: float, pairs: int) -> None:
        self.loss += loss
        self.batches += 1
        self.right += right
        self.pairs += pairs

    def take(self) -> dict:
        line = {"loss": self.loss / max(1, self.batches), "accuracy": self.right / max(1, self.pairs)}
        self.loss, self.batches, self.right, self.pairs = 0.0, 0, 0.0, 0
        return line


def evaluate_baseline(
    name: str, held_out: list[RankedPrompt], config: RewardConfig, device, cache_dir=None, progress=None
) -> dict:
    """Another reward model (the project's current one) on the same held-out prompts, with its own tokenizer:
    the fair comparison for deciding which model to keep."""
    model, tokenizer = load_reward_model(name, cache_dir)
    model.to(device)
    result = evaluate(model, held_out, tokenizer, config, Reading.saved_with(model), progress)
    return {f"baseline_{key}": value for key, value in result.items()}


def _read_data(config: RewardConfig, data_path, reference_path) -> tuple[list, list, list]:
    """Train and held-out prompts, split by prompt so that no held-out prompt has a judgement in training;
    and the replies the scores are normalised over."""
    dataset = read_rankings(data_path)
    if not config.record_weights:
        dataset.examples = [replace(example, weight=1.0) for example in dataset.examples]
    train, held_out = dataset.split(config.eval_fraction, config.seed)
    if not train:
        raise DataError(
            f"No prompts are left to train on: {len(held_out)} held out of {len(dataset.examples)} "
            f"(eval_fraction {config.eval_fraction}). Lower the held-out share or add judgements."
        )
    references = (
        read_references(reference_path)
        if reference_path
        else [Reference(example.prompt, response) for example in dataset.examples for response in example.responses]
    )
    return train, held_out, references


@dataclass
class _Setup:
    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int


def _setup(config: RewardConfig, accelerator, model, tokenizer, train: list[Encoded]) -> _Setup:
    """The model in train mode (LoRA adapters on it if asked), batches grouped by length in a random order,
    AdamW and a cosine schedule with warm-up over the run's steps, prepared by the accelerator."""
    if config.lora:
        model = _with_lora(model, config)
    model.train()
    generator = torch.Generator().manual_seed(config.seed)
    batches = LengthGroupedBatches(
        [item.length for item in train], config.prompts_per_batch, generator,
        window=config.length_window if config.group_by_length else 1,
    )  # fmt: skip
    loader: DataLoader = DataLoader(
        train,  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_sampler=batches,
        collate_fn=lambda items: collate(items, tokenizer, config.use_margin, config.source_weights),
    )
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    return _Setup(model, optimizer, loader, scheduler, total_steps)


@dataclass
class _Trained:
    steps: int
    pairs_seen: int
    evaluations: list[dict]
    best: dict  # the evaluation of the epoch kept ({} without held-out prompts)
    predictions: Predictions | None  # that epoch's scores of the held-out judgements
    seconds: dict[str, float]  # training, evaluating


def _train(
    config: RewardConfig, accelerator, setup: _Setup, held_out: list[Encoded], tokenizer, progress: Progress
) -> _Trained:
    """Epochs of (forward, listwise loss, update, log), a held-out evaluation after each. Stops when the
    held-out loss has not improved for ``patience`` epochs, and leaves the model as it was at its best."""
    model, optimizer, scheduler, total_steps = setup.model, setup.optimizer, setup.scheduler, setup.total_steps
    progress.phase("training")
    step, pairs_seen, epoch = 0, 0, 0
    seconds = {"training": 0.0, "evaluating": 0.0}
    window = _Window()
    evaluations: list[dict] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_predictions: Predictions | None = None
    started = time.monotonic()
    while step < total_steps:
        for batch in setup.loader:
            with accelerator.accumulate(model):
                rewards = rewards_of(model, batch)  # (N,)
                loss = listwise_loss(rewards, batch.pairs)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            with torch.no_grad():
                difference = rewards[batch.pairs.winner] - rewards[batch.pairs.loser]
                window.add(float(loss), float((difference > 0).sum()), batch.pairs.winner.numel())
                pairs_seen += batch.pairs.winner.numel()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(step / total_steps)
            if (step % config.logging_steps == 0 or step == total_steps) and accelerator.is_main_process:
                progress.log({
                    "step": step, "total_steps": total_steps, "epoch": epoch + 1, **window.take(),
                    "learning_rate": scheduler.get_last_lr()[0],
                    "pairs_per_s": pairs_seen / max(seconds["training"] + time.monotonic() - started, 1e-9),
                })  # fmt: skip
            if step >= total_steps:
                break
        epoch += 1
        seconds["training"] += time.monotonic() - started
        if not held_out:
            started = time.monotonic()
            continue
        progress.phase("evaluating")
        evaluating = time.monotonic()
        predictions = predict(model, held_out, tokenizer, config, progress)
        evaluation = {"epoch": epoch, "step": step, **summary(predictions)}
        seconds["evaluating"] += time.monotonic() - evaluating
        evaluations.append(evaluation)
        if accelerator.is_main_process:
            progress.log(evaluation)
        if "eval_loss" in evaluation and quality.best_epoch(evaluations) is evaluation:
            best_predictions = predictions
            if step < total_steps:
                best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        if step < total_steps and quality.should_stop(evaluations, config.patience):
            break
        if step < total_steps:
            progress.phase("training")
        started = time.monotonic()
    best = quality.best_epoch(evaluations) if evaluations and "eval_loss" in evaluations[0] else {}
    if best and best is not evaluations[-1] and best_state is not None:
        model.load_state_dict(best_state)  # early stopping: back to the best epoch
    return _Trained(step, pairs_seen, evaluations, best, best_predictions, seconds)


def train_reward_model(
    config: RewardConfig,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    reference_path: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    cache_dir: str | Path | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    baseline: str | None = None,
) -> RewardResult:
    """Train on a ranking (or preference) export and save the model under ``output_dir/model``.

    ``model`` and ``tokenizer`` may be given directly (tiny test models); otherwise ``config.model`` is
    loaded. ``on_metrics`` receives the phases, progress, one dict per logging step and per evaluation
    (``training.runtime``). ``baseline``, another reward model, is evaluated on the same held-out prompts.
    """
    progress = Progress(on_metrics, "reward")
    output_dir = Path(output_dir)
    set_seed(config.seed)
    accelerator = _accelerator(config)
    progress.phase("loading")
    train, held_out, references = _read_data(config, data_path, reference_path)
    if model is None or tokenizer is None:
        model, tokenizer = load_reward_model(config.model, cache_dir)
    train_encoded = tokenize_examples(train, tokenizer, Reading.of(config))
    held_out_encoded = tokenize_examples(held_out, tokenizer, Reading.of(config))
    setup = _setup(config, accelerator, model, tokenizer, train_encoded)
    trained = _train(config, accelerator, setup, held_out_encoded, tokenizer, progress)

    # Calibrate and measure, normalise, then save a plain model (LoRA adapters merged) any transformers user
    # can load, with what it needs to be read as it was trained: its input layout and its temperature.
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(setup.model)
    if config.lora:
        model = model.merge_and_unload()  # type: ignore[operator]  # a peft model
    model.config.reward_inputs = Reading.of(config).as_dict()
    report = _calibrate(model, trained.predictions, config) if trained.predictions is not None else {}
    normalization, started = {}, time.monotonic()
    if config.normalize:
        progress.phase("normalising")
        normalization = normalize(model, tokenizer, references, config, progress)
    trained.seconds["normalising"] = time.monotonic() - started
    final = {
        "train_prompts": len(train),
        "eval_prompts": len(held_out),
        "steps": trained.steps,
        "epochs_run": len(trained.evaluations) or None,
        "best_epoch": trained.best.get("epoch"),
        "pairs_per_s": trained.pairs_seen / max(trained.seconds["training"], 1e-9),
        **{key: value for key, value in trained.best.items() if key.startswith("eval_")},
        "epochs": [
            {key: line[key] for key in ("epoch", "eval_loss", "eval_accuracy") if key in line}
            for line in trained.evaluations
        ],
        **report,
        "normalization": normalization,
        "seconds": {name: round(value, 2) for name, value in trained.seconds.items()},
    }
    model_dir = output_dir / MODEL_DIR
    result = RewardResult(model_dir=str(model_dir), metrics=final, config=config.as_dict())
    if accelerator.is_main_process:
        progress.phase("saving")
        model_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        if baseline and held_out:  # once the model is safe: a baseline that fails to load costs no run
            accelerator.free_memory()
            progress.phase("evaluating")
            final.update(_baseline_comparison(baseline, held_out, config, accelerator.device, cache_dir, progress))
        if trained.predictions is not None:
            write_held_out_judgements(output_dir, held_out, trained.predictions)
        write_result(output_dir, result.as_dict())
        progress.done(final)
    return result


def write_held_out_judgements(output_dir: Path, held_out: list[RankedPrompt], predictions: Predictions) -> int:
    """For each held-out judgement that names its id (a ranking export's records do), how many of its pairs the
    model orders as the rater did (a tie in reward counts half) out of how many: one JSON line each, in
    ``HELD_OUT_JUDGEMENTS``. The product reads it to measure each rater's agreement with the reward model on
    judgements the model never trained on. Returns how many lines."""
    difference, owner = predictions.difference.detach().cpu(), predictions.pairs.prompt.cpu()
    agreed = (difference > 0).float() + 0.5 * (difference == 0).float()
    count = len(held_out)
    sums = torch.zeros(count).index_add_(0, owner, agreed)
    pairs = torch.zeros(count).index_add_(0, owner, torch.ones_like(agreed))
    lines = [
        json.dumps({"judgement_id": example.judgement_id, "agreed": float(sums[index]), "pairs": int(pairs[index])})
        for index, example in enumerate(held_out)
        if example.judgement_id is not None and pairs[index] > 0
    ]
    (output_dir / HELD_OUT_JUDGEMENTS).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _calibrate(model, predictions: Predictions, config: RewardConfig) -> dict:
    """The temperature fitted on the kept epoch's held-out scores (stored in the model's config as
    ``reward_calibration``) and the quality report it belongs to."""
    difference, probability = predictions.difference, predictions.pairs.probability
    temperature = quality.fit_temperature(difference, probability) if config.calibrate else 1.0
    report = quality_report(predictions, temperature)
    model.config.reward_calibration = {**report["calibration"], "pairs": int(predictions.pairs.winner.numel())}
    return report


def _baseline_comparison(baseline: str, held_out, config: RewardConfig, device, cache_dir, progress) -> dict:
    """``evaluate_baseline``, or why it could not be done (the run keeps its own model either way)."""
    try:
        return evaluate_baseline(baseline, held_out, config, device, cache_dir, progress)
    except Exception as error:  # a deleted folder, a model that no longer loads, memory: reported, not fatal
        return {"baseline_error": f"{type(error).__name__}: {error}"[:500]}
