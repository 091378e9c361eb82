"""Direct preference optimisation (Rafailov et al., 2023) with ``trl.DPOTrainer``: the policy is tuned on
preference pairs directly, beside or instead of reward model and PPO, against the starting policy as the
reference.

The data is a ``preference`` export (or a ``ranking`` one: every ordered pair of its groups). Prompts are laid
out as the policy is prompted (``training.text.policy_prompt``), as SFT and PPO lay them out. Before and after
training, the chosen replies' log-probability margin over the rejected ones (summed over the reply's tokens) is
measured on up to ``margin_pairs`` training pairs: DPO works when that margin rises.
"""

import copy
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback

from training.config import DPOConfig
from training.data import DataError, read_rankings
from training.models import load_causal_lm
from training.rollout import cache_argument_name
from training.runtime import MetricsSink, Progress, write_result
from training.sft import TrainerProgress, lora_config, policy_save, trainer_arguments
from training.text import policy_prompt, uses_chat_template

# What TRL logs, under the names of our curves.
LOGGED = {
    "rewards/margins": "margin",
    "rewards/accuracies": "preference_accuracy",
    "rewards/chosen": "chosen_reward",
    "rewards/rejected": "rejected_reward",
}


@dataclass
class DPOResult:
    model_dir: str
    metrics: dict
    config: dict

    def as_dict(self) -> dict:
        return asdict(self)


def dpo_pairs(path: str | Path) -> list[tuple[list[dict[str, str]], str, str]]:
    """(prompt messages, chosen reply, rejected reply) for every ordered pair of a preference or ranking export."""
    pairs = [
        (example.prompt, example.responses[winner], example.responses[loser])
        for example in read_rankings(path).examples
        for winner, loser in example.pairs()
    ]
    if not pairs:
        raise DataError(f"{Path(path).name} holds no preference pairs (only ties).")
    return pairs


def dpo_records(pairs, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """The pairs in the layout the tokenizer calls for: messages with a chat template, else the prompt text."""
    if uses_chat_template(tokenizer):
        return [
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
            for prompt, chosen, rejected in pairs
        ]
    return [
        {"prompt": policy_prompt(tokenizer, prompt), "chosen": chosen, "rejected": rejected}
        for prompt, chosen, rejected in pairs
    ]


@torch.no_grad()
def reply_logprob(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, reply: str) -> float:
    """log p(reply, then EOS | prompt), summed over the reply's tokens."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = [*tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + reply_ids], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids) :, None]).sum())


@torch.no_grad()
def replies_logprob(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, replies: list[str]
) -> list[float]:
    """``reply_logprob`` of each reply to one prompt, the prompt run once: each reply goes on from a copy of the
    prompt's key-value cache, so a pair runs the prompt's tokens once instead of twice."""
    cache_argument = cache_argument_name(model)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cache = DynamicCache(config=model.config)
    prompted = model(
        input_ids=torch.tensor([prompt_ids], device=model.device), use_cache=True, **{cache_argument: cache}
    )
    scores = []
    for reply in replies:
        reply_ids = torch.tensor(
            [[*tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]], device=model.device
        )
        extended = copy.deepcopy(cache)  # a forward pass extends the cache it is given
        following = model(input_ids=reply_ids, use_cache=True, **{cache_argument: extended}).logits[0, :-1]
        logits = torch.cat([prompted.logits[0, -1:], following]).float()
        scores.append(float(torch.log_softmax(logits, dim=-1).gather(1, reply_ids[0, :, None]).sum()))
    return scores


def preference_margin(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs,
    on_progress: Callable[[float], None] | None = None,
) -> float:
    """The mean of log p(chosen) - log p(rejected) over the pairs (replies summed over their tokens);
    ``on_progress`` hears the share of the pairs measured so far."""
    model.eval()
    margins = []
    for number, (prompt, chosen, rejected) in enumerate(pairs, start=1):
        chosen_logprob, rejected_logprob = replies_logprob(
            model, tokenizer, policy_prompt(tokenizer, prompt), [chosen, rejected]
        )
        margins.append(chosen_logprob - rejected_logprob)
        if on_progress is not None:
            on_progress(number / len(pairs))
    return sum(margins) / len(margins)


def measuring(progress: Progress) -> Callable[[float], None]:
    """Report the margin's measurement as the current phase's progress (its last pair always)."""
    return lambda fraction: progress.update(fraction, force=fraction >= 1.0)


def train_dpo(
    config: DPOConfig,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    on_metrics: MetricsSink | None = None,
    cache_dir: str | Path | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> DPOResult:
    """Tune the policy on preference pairs and save it (with its tokenizer) under ``output_dir/model``."""
    import datasets
    import trl

    progress = Progress(on_metrics, "dpo")
    output_dir = Path(output_dir)
    progress.phase("loading")
    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(config.model, cache_dir)
    pairs = dpo_pairs(data_path)
    measured = random.Random(config.seed).sample(pairs, min(config.margin_pairs, len(pairs)))
    progress.phase("measuring")
    margin_before = preference_margin(model, tokenizer, measured, measuring(progress)) if measured else None
    tokenizer.padding_side = "right"
    arguments = trl.DPOConfig(**trainer_arguments(config, output_dir), beta=config.beta, loss_type=[config.loss_type])
    # The reference is the starting policy, frozen: a copy of it (with LoRA, the base model with its adapters off).
    reference = None if config.lora else copy.deepcopy(model).eval().requires_grad_(False)
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=reference,
        args=arguments,
        train_dataset=datasets.Dataset.from_list(dpo_records(pairs, tokenizer)),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[TrainerProgress(progress, LOGGED)],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to ``on_metrics``, not to stdout
    started = time.monotonic()
    outcome = trainer.train()
    progress.phase("saving")
    trained, model_dir = policy_save(trainer, tokenizer, config, output_dir)
    progress.phase("checking")  # the margin again, on the saved policy
    margin_after = preference_margin(trained, tokenizer, measured, measuring(progress)) if measured else None
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "train_loss": float(outcome.training_loss),
        "first_loss": losses[0] if losses else None,  # None, not NaN: the metrics are JSON
        "last_loss": losses[-1] if losses else None,
        "margin_pairs": len(measured),
        "margin_before": margin_before,
        "margin_after": margin_after,
        "seconds": round(time.monotonic() - started, 2),
    }
    result = DPOResult(model_dir=str(model_dir), metrics=metrics, config=config.as_dict())
    write_result(output_dir, result.as_dict())
    progress.done(metrics)
    return result
