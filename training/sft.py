"""Supervised fine-tuning on demonstrations (InstructGPT, section 3.5, step 1) with ``trl.SFTTrainer``.

The ``sft`` export holds ``{"prompt", "completion"}`` records (or ``{"messages"}``). Each becomes a
prompt-completion pair laid out as the policy will later be prompted (``training.text.policy_prompt``): the
loss covers the completion only, and the completion ends with EOS, so the model learns to stop.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from training.config import DPOConfig, SFTConfig
from training.data import DataError, read_references
from training.models import load_causal_lm
from training.runtime import MODEL_DIR, MetricsSink, Progress, write_result
from training.text import policy_prompt, uses_chat_template


@dataclass
class SFTResult:
    model_dir: str
    metrics: dict
    config: dict

    def as_dict(self) -> dict:
        return asdict(self)


def sft_records(path: str | Path, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Prompt-completion records in the layout the tokenizer calls for."""
    demonstrations = read_references(path)
    if not demonstrations:
        raise DataError(f"{Path(path).name} holds no demonstrations.")
    if uses_chat_template(tokenizer):
        return [
            {"prompt": item.prompt, "completion": [{"role": "assistant", "content": item.response}]}
            for item in demonstrations
        ]
    return [{"prompt": policy_prompt(tokenizer, item.prompt), "completion": item.response} for item in demonstrations]


class TrainerProgress(TrainerCallback):
    """Hands a transformers trainer's progress and logs on (``training.runtime``): the training phase, how far
    along it is after every step, and one curve point per logging step (the trainer's loss is already the mean
    over the steps since the last one), with the logged values ``extra`` names, under its names."""

    def __init__(self, progress: Progress, extra: dict[str, str] | None = None) -> None:
        self.progress, self.extra = progress, extra or {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.phase("training")

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(state.global_step / max(state.max_steps, 1))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        self.progress.log(
            {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "epoch": float(logs.get("epoch", 0.0)),
                **{ours: float(logs[theirs]) for theirs, ours in self.extra.items() if theirs in logs},
            }
        )


def trainer_arguments(config: SFTConfig | DPOConfig, output_dir: Path) -> dict:
    """What SFT and DPO set alike in TRL's trainer configs: the schedule, precision and device, no checkpoints,
    no reporting of its own (the trainer's logs go to ``TrainerProgress``)."""
    use_cuda = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir / "trainer"),
        "num_train_epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": "cosine",
        "max_grad_norm": config.max_grad_norm,
        "max_length": config.max_length,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "bf16": use_cuda and config.bf16 and torch.cuda.is_bf16_supported(),
        "use_cpu": not use_cuda,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataset_num_proc": None,
    }


def lora_config(config: SFTConfig | DPOConfig):
    """The LoRA adapters to train, or None for the whole model."""
    if not config.lora:
        return None
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_rank, lora_alpha=config.lora_alpha)


def policy_save(trainer, tokenizer, config: SFTConfig | DPOConfig, output_dir: Path) -> tuple[PreTrainedModel, Path]:
    """The trained policy (LoRA adapters merged in) saved with its tokenizer under ``output_dir/model``."""
    trained = cast(PreTrainedModel, trainer.model)
    if config.lora:
        trained = trained.merge_and_unload()  # type: ignore[operator]  # a peft model
    model_dir = output_dir / MODEL_DIR
    trained.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return trained, model_dir


def train_sft(
    config: SFTConfig,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    on_metrics: MetricsSink | None = None,
    cache_dir: str | Path | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> SFTResult:
    """Fine-tune on an ``sft`` export and save the model (with its tokenizer) under ``output_dir/model``."""
    import datasets
    import trl

    progress = Progress(on_metrics, "sft")
    output_dir = Path(output_dir)
    progress.phase("loading")
    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(config.model, cache_dir)
    tokenizer.padding_side = "right"  # for training; generation sets left padding again
    records = sft_records(data_path, tokenizer)
    arguments = trl.SFTConfig(**trainer_arguments(config, output_dir), completion_only_loss=True)
    trainer = trl.SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=datasets.Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[TrainerProgress(progress)],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to ``on_metrics``, not to stdout
    started = time.monotonic()
    outcome = trainer.train()
    progress.phase("saving")
    trained, model_dir = policy_save(trainer, tokenizer, config, output_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "demonstrations": len(records),
        "steps": trainer.state.global_step,
        "train_loss": float(outcome.training_loss),
        "first_loss": losses[0] if losses else None,  # None, not NaN: the metrics are JSON
        "last_loss": losses[-1] if losses else None,
        "seconds": round(time.monotonic() - started, 2),
    }
    result = SFTResult(model_dir=str(model_dir), metrics=metrics, config=config.as_dict())
    write_result(output_dir, result.as_dict())
    progress.done(metrics)
    return result
