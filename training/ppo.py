"""PPO with a per-token KL penalty (InstructGPT, section 3.5, step 3).

Each iteration:

1. **Rollout.** ``batch_size`` prompts, left-padded, are continued by the policy: sampling at temperature T
   with the KV cache, up to ``max_new_tokens``, cut after the first EOS.
2. **Score.** The reward model reads prompt and response (decoded and re-encoded, so it may use its own
   tokenizer) and gives one score per response; a response that never ends gets ``missing_eos_penalty``.
3. **Rewards.** Per token: ``-beta * (log pi - log pi_ref)`` (both at temperature T); the score is added at
   the last token. Beta is fixed or steered towards a target KL (Ziegler et al. 2019).
4. **Advantages.** GAE (gamma, lambda) from the value model's estimates; advantages whitened over real tokens.
5. **Update.** ``ppo_epochs`` passes over minibatches: clipped policy loss, clipped value loss (times
   ``vf_coef``), optionally PPO-ptx (``ptx_coef`` times the language-model loss on demonstrations, in the same
   step), gradient clipping.

Dropout is off in every model. The reference is a frozen copy of the initial policy (with LoRA: the policy
with its adapters off). The value model starts from the reward model when both read the policy's
tokenizer, otherwise from the policy's body with a new scalar head. Checkpoints hold the weights, the
optimiser, beta and every random state, so a resumed run ends where an uninterrupted one does.
"""

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.config import PPOConfig
from training.data import DemonstrationBatches, read_prompts
from training.models import disable_dropout, load_causal_lm, load_reward_model
from training.probes import held_back, probe, probe_means, probes_for
from training.reward import score
from training.rl import (
    AdaptiveKLController,
    ValueModel,
    entropy_of,
    gae,
    masked_mean,
    masked_whiten,
    response_logprobs,
    same_vocabulary,
    value_model_for,
)
from training.rollout import RolloutEngine, rollout_engine_for
from training.runtime import MODEL_DIR, MetricsSink, Progress, random_states, random_states_restore, write_result
from training.sampling import Rollout, position_ids_for, sample

RewardFunction = Callable[[list[list[dict]], list[str]], torch.Tensor]
"""Scores for (prompts, response texts): a fixed function in place of a reward model (tests, rule rewards)."""


def penalise_missing_eos(scores: torch.Tensor, has_eos: torch.Tensor, config: PPOConfig) -> torch.Tensor:
    """A response cut off at ``max_new_tokens`` loses ``missing_eos_penalty``: subtracted from its score (the
    reward model's judgement still reaches the policy), or in place of it (``missing_eos="replace"``)."""
    if not config.missing_eos_penalty:
        return scores
    if config.missing_eos == "replace":
        penalised = torch.full_like(scores, -config.missing_eos_penalty)
    else:
        penalised = scores - config.missing_eos_penalty
    return torch.where(has_eos, scores, penalised)


def mean_of_window(lines: list[dict]) -> dict:
    """One curve point for the iterations since the last one: the mean of each figure over all of them (the
    step is the last one's; the samples are the last iteration's)."""
    last = lines[-1]
    point = dict(last)
    for key, value in last.items():
        if isinstance(value, float) and key != "beta":
            point[key] = float(np.mean([line[key] for line in lines if key in line]))
    point["iterations"] = len(lines)
    return point


# --- training ------------------------------------------------------------------------------------------------


@dataclass
class PPOResult:
    model_dir: str
    metrics: dict
    config: dict
    history: list[dict]

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=4)
def _prompt_order(count: int, seed: int, epoch: int) -> list[int]:
    """A fixed shuffle of the prompts per pass, so that iteration n always sees the same prompts."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def _prompts_for(step: int, prompts: Sequence, batch_size: int, seed: int) -> list:
    chosen: list = []
    position = step * batch_size
    while len(chosen) < batch_size:
        epoch, offset = divmod(position, len(prompts))
        chosen.append(prompts[_prompt_order(len(prompts), seed, epoch)[offset]])
        position += 1
    return chosen


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    folders = sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda path: int(path.name[5:]))
    return folders[-1] if folders else None


@dataclass
class _Models:
    """Everything an iteration runs: the policy (trained), its frozen reference (None with LoRA: the policy with
    its adapters off), the value model (trained), and the frozen reward model or reward function."""

    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    reference: PreTrainedModel | None
    value: ValueModel
    value_source: str
    reward_model: PreTrainedModel | None
    reward_tokenizer: PreTrainedTokenizerBase | None
    reward_function: RewardFunction | None
    engine: RolloutEngine | None = None  # what samples the episodes (training.rollout); the loop on the policy

    def updating(self, on: bool) -> None:
        """Dropout is off in every model, so train mode changes one thing: gradient checkpointing (which
        transformers applies in train mode only) is on for the passes that update, off for sampling."""
        self.policy.train(on)
        self.value.train(on)


@dataclass
class _Experience:
    """One iteration's episodes, scored and valued before any update. Shapes: B episodes, L response tokens."""

    prompts: list
    rollout: Rollout
    raw_scores: torch.Tensor  # (B,) the reward model's scores
    scores: torch.Tensor  # (B,) with the missing-EOS penalty
    kl: torch.Tensor  # (B, L) log pi - log pi_ref on response tokens
    beta: float
    old_logprobs: torch.Tensor  # (B, L)
    old_values: torch.Tensor  # (B, L)
    advantages: torch.Tensor  # (B, L) whitened
    returns: torch.Tensor  # (B, L)
    first_pass: tuple | None  # (logprobs, logits, values) with gradients, reused by a single-pass update
    logprob_gap: float  # mean |engine's log-probability - the policy's| over response tokens: 0 up to rounding


def _load_models(config: PPOConfig, accelerator: Accelerator, cache_dir, given: dict) -> _Models:
    """The policy and its reference, the frozen reward model, the value model, as given or loaded."""
    policy, tokenizer = given["policy"], given["tokenizer"]
    if policy is None or tokenizer is None:
        policy, tokenizer = load_causal_lm(config.policy, cache_dir)
    reward_model, reward_tokenizer, reward_function = (
        given["reward_model"], given["reward_tokenizer"], given["reward_function"]
    )  # fmt: skip
    if reward_function is None and (reward_model is None or reward_tokenizer is None):
        if not config.reward_model:
            raise ValueError("PPO needs a reward model (config.reward_model) or a reward function.")
        reward_model, reward_tokenizer = load_reward_model(config.reward_model, cache_dir)
    disable_dropout(policy)
    shared_tokenizer = reward_tokenizer is not None and same_vocabulary(tokenizer, reward_tokenizer)
    value, value_source = value_model_for(policy, reward_model, shared_tokenizer)
    disable_dropout(value.body)
    if config.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        policy = get_peft_model(
            policy, LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_rank, lora_alpha=config.lora_alpha)
        )
        reference = None  # the policy with its adapters off
    else:
        reference = copy.deepcopy(policy).requires_grad_(False).eval().to(accelerator.device)
    if reward_model is not None:
        reward_model.requires_grad_(False).eval().to(accelerator.device)
    return _Models(policy, tokenizer, reference, value, value_source, reward_model, reward_tokenizer, reward_function)


def _accelerator(config: PPOConfig) -> Accelerator:
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)
    use_cuda = torch.cuda.is_available()
    return Accelerator(
        mixed_precision="bf16" if use_cuda and config.bf16 and torch.cuda.is_bf16_supported() else "no",
        cpu=not use_cuda,
    )


def _scores(config: PPOConfig, models: _Models, prompts: list, texts: list[str]) -> torch.Tensor:
    """The reward model's (or the reward function's) score of each response."""
    if models.reward_function is not None:
        return torch.as_tensor(models.reward_function(prompts, texts), dtype=torch.float32)
    return score(
        models.reward_model, models.reward_tokenizer, prompts, texts, config.reward_max_length,
        batch_size=config.mini_batch_size,
    )  # fmt: skip


def _rollout(
    config: PPOConfig, models: _Models, accelerator: Accelerator, prompts: list, controller: AdaptiveKLController
) -> _Experience:
    """Steps 1 to 4: sample, score, the per-token rewards with the KL penalty, and GAE advantages, all under
    the policy as it is before this iteration's update."""
    device = accelerator.device
    unwrapped = accelerator.unwrap_model(models.policy)
    with accelerator.autocast():
        rollout = sample(unwrapped, models.tokenizer, prompts, config, device, models.engine)

    # Score, log-probabilities under policy and reference, values: all before any update.
    with torch.no_grad(), accelerator.autocast():
        scores = _scores(config, models, prompts, rollout.texts).to(device).float()
        raw_scores = scores.clone()
        scores = penalise_missing_eos(scores, rollout.has_eos, config)
        sequences, attention, context, mask = rollout.sequences, rollout.attention_mask, rollout.context, rollout.mask
        if models.reference is None:
            with unwrapped.disable_adapter():
                ref_logprobs, _ = response_logprobs(models.policy, sequences, attention, context, config.temperature)
        else:
            ref_logprobs, _ = response_logprobs(models.reference, sequences, attention, context, config.temperature)
        ref_logprobs = ref_logprobs * mask

    # With one pass over one minibatch, the forward pass of the update is the one taken before it: reuse it
    # (the ratio is then exactly 1, as in PPO's first pass) and save a forward pass of each model.
    single_pass = config.ppo_epochs == 1 and config.mini_batch_size == config.batch_size
    models.updating(single_pass)
    with torch.set_grad_enabled(single_pass), accelerator.autocast():
        logprobs, logits = response_logprobs(models.policy, sequences, attention, context, config.temperature)
        values = models.value(sequences, attention, position_ids_for(attention))[:, context - 1 : -1].float()
    with torch.no_grad():
        old_logprobs, old_values = logprobs.detach() * mask, values.detach() * mask
        kl = (old_logprobs - ref_logprobs) * mask
        beta = controller.beta
        rewards = -beta * kl
        last = (mask.sum(1) - 1).long()
        rewards[torch.arange(len(last), device=device), last] += scores
        if config.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
        advantages, returns = gae(rewards, old_values, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask) * mask
    return _Experience(
        prompts=prompts, rollout=rollout, raw_scores=raw_scores, scores=scores, kl=kl, beta=beta,
        old_logprobs=old_logprobs, old_values=old_values, advantages=advantages, returns=returns,
        first_pass=(logprobs, logits, values) if single_pass else None,
        logprob_gap=float(masked_mean((rollout.logprobs - old_logprobs).abs(), mask)),
    )  # fmt: skip


def _minibatch_losses(config: PPOConfig, models: _Models, accelerator, experience: _Experience, rows) -> dict:
    """Step 5 on one minibatch: the clipped policy loss and the clipped value loss, with what they are made of."""
    rollout = experience.rollout
    sequences, attention, context = rollout.sequences, rollout.attention_mask, rollout.context
    if experience.first_pass is not None:
        logprobs, logits, values = (tensor[rows] for tensor in experience.first_pass)
    else:
        with accelerator.autocast():
            logprobs, logits = response_logprobs(
                models.policy, sequences[rows], attention[rows], context, config.temperature
            )
            values = models.value(sequences[rows], attention[rows], position_ids_for(attention[rows]))
        values = values[:, context - 1 : -1].float()
    mask, old_values, returns = rollout.mask[rows], experience.old_values[rows], experience.returns[rows]
    clipped_values = old_values + (values - old_values).clamp(-config.cliprange_value, config.cliprange_value)
    value_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped_values - returns) ** 2), mask)
    log_ratio = (logprobs - experience.old_logprobs[rows]) * mask
    ratio = torch.exp(log_ratio)
    advantages = experience.advantages[rows]
    policy_loss = masked_mean(
        torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - config.cliprange, 1 + config.cliprange)), mask
    )
    return {"policy_loss": policy_loss, "value_loss": value_loss, "ratio": ratio, "log_ratio": log_ratio,
            "logits": logits, "mask": mask}  # fmt: skip


def _update(
    config: PPOConfig,
    models: _Models,
    accelerator,
    optimizer,
    trainable: list,
    experience: _Experience,
    demonstrations: DemonstrationBatches | None,
) -> dict[str, list[float]]:
    """Step 5: ``ppo_epochs`` passes over shuffled minibatches, one optimiser step each; the statistics."""
    stats: dict[str, list[float]] = {
        name: [] for name in ("policy_loss", "value_loss", "clipfrac", "approxkl", "entropy", "ptx_loss")
    }
    models.updating(True)
    for _ in range(config.ppo_epochs):
        order = torch.randperm(config.batch_size).tolist()
        for first in range(0, config.batch_size, config.mini_batch_size):
            rows = torch.tensor(order[first : first + config.mini_batch_size], device=accelerator.device)
            parts = _minibatch_losses(config, models, accelerator, experience, rows)
            loss = parts["policy_loss"] + config.vf_coef * parts["value_loss"]
            if demonstrations is not None:
                with accelerator.autocast():
                    ptx_loss = models.policy(**demonstrations.batch(accelerator.device)).loss
                loss = loss + config.ptx_coef * ptx_loss
                stats["ptx_loss"].append(float(ptx_loss.detach()))
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                mask, ratio = parts["mask"], parts["ratio"]
                stats["policy_loss"].append(float(parts["policy_loss"]))
                stats["value_loss"].append(float(parts["value_loss"]))
                stats["clipfrac"].append(float(masked_mean(((ratio - 1).abs() > config.cliprange).float(), mask)))
                stats["approxkl"].append(float(0.5 * masked_mean(parts["log_ratio"] ** 2, mask)))
                stats["entropy"].append(float(masked_mean(entropy_of(parts["logits"].detach()), mask)))
    models.updating(False)
    return stats


def _iteration_metrics(config: PPOConfig, done: int, experience: _Experience, stats: dict, seconds: float) -> dict:
    rollout = experience.rollout
    metrics: dict[str, object] = {
        "step": done,
        "total_steps": config.steps,
        "score": float(experience.raw_scores.mean()),
        "score_with_penalty": float(experience.scores.mean()),
        "kl": float(experience.kl.sum(1).mean()),
        "beta": experience.beta,
        "entropy": float(np.mean(stats["entropy"])),
        "clipfrac": float(np.mean(stats["clipfrac"])),
        "approxkl": float(np.mean(stats["approxkl"])),
        "policy_loss": float(np.mean(stats["policy_loss"])),
        "value_loss": float(np.mean(stats["value_loss"])),
        "response_length": float(rollout.mask.sum(1).mean()),
        "eos_rate": float(rollout.has_eos.float().mean()),
        "rollout_logprob_gap": experience.logprob_gap,
        "episodes_per_s": config.batch_size / seconds,
    }
    triples = zip(experience.prompts, rollout.texts, experience.raw_scores.tolist(), strict=True)
    metrics["samples"] = [
        {"prompt": prompt, "response": text, "score": float(value)} for prompt, text, value in list(triples)[:3]
    ]
    if stats["ptx_loss"]:
        metrics["ptx_loss"] = float(np.mean(stats["ptx_loss"]))
    return metrics


def _checkpoint_load(output_dir: Path, accelerator, models: _Models, optimizer, controller) -> tuple[int, list]:
    """Pick up at the last checkpoint, if any: weights, optimiser, beta, history and every random state."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        return 0, []
    state = torch.load(checkpoint / "state.pt", weights_only=False, map_location="cpu")
    accelerator.unwrap_model(models.policy).load_state_dict(state["policy"])
    accelerator.unwrap_model(models.value).load_state_dict(state["value"])
    optimizer.load_state_dict(state["optimizer"])
    controller.beta = state["beta"]
    random_states_restore(state["random"])
    return state["step"], state["history"]


def _checkpoint_save(
    output_dir: Path, step: int, accelerator, models: _Models, optimizer, controller, history: list
) -> None:
    """Everything a resumed run needs to end where this one would, written whole or not at all; older
    checkpoints go."""
    if not accelerator.is_main_process:
        return
    folder = output_dir / "checkpoints" / f"step-{step}"
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "policy": accelerator.unwrap_model(models.policy).state_dict(),
        "value": accelerator.unwrap_model(models.value).state_dict(),
        "optimizer": optimizer.state_dict(),
        "beta": controller.beta,
        "history": history,
        "random": random_states(),
    }
    torch.save(state, partial / "state.pt")
    partial.rename(folder)
    for older in (output_dir / "checkpoints").glob("step-*"):
        if older != folder and not older.name.endswith(".partial"):
            for file in older.iterdir():
                file.unlink()
            older.rmdir()


def _save_policy(config: PPOConfig, output_dir: Path, accelerator, models: _Models) -> Path:
    """The trained policy, as a plain model with its tokenizer (LoRA adapters merged)."""
    accelerator.wait_for_everyone()
    model_dir = output_dir / MODEL_DIR
    final = accelerator.unwrap_model(models.policy)
    if config.lora:
        final = final.merge_and_unload()
    if accelerator.is_main_process:
        final.save_pretrained(model_dir)
        models.tokenizer.save_pretrained(model_dir)
    return model_dir


def train_ppo(
    config: PPOConfig,
    prompts_path: str | Path,
    output_dir: str | Path,
    *,
    ptx_path: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    cache_dir: str | Path | None = None,
    policy: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    reward_model: PreTrainedModel | None = None,
    reward_tokenizer: PreTrainedTokenizerBase | None = None,
    reward_function: RewardFunction | None = None,
    resume: bool = True,
) -> PPOResult:
    """Tune ``config.policy`` against the reward model (or ``reward_function``) on the prompts of any export,
    and save the policy with its tokenizer under ``output_dir/model``. With ``resume``, a run picks up at
    the last checkpoint under ``output_dir/checkpoints``. ``on_metrics`` receives one dict per iteration."""
    progress = Progress(on_metrics, "ppo")
    output_dir = Path(output_dir)
    if config.ptx_coef > 0 and ptx_path is None:
        raise ValueError("PPO-ptx (ptx_coef > 0) needs demonstrations: pass ptx_path.")
    progress.phase("loading")
    set_seed(config.seed)
    accelerator = _accelerator(config)
    prompts = read_prompts(prompts_path)
    demonstrations = (
        DemonstrationBatches(ptx_path, tokenizer, config) if ptx_path is not None and config.ptx_coef > 0 else None
    )
    given = {"policy": policy, "tokenizer": tokenizer, "reward_model": reward_model,
             "reward_tokenizer": reward_tokenizer, "reward_function": reward_function}  # fmt: skip
    models = _load_models(config, accelerator, cache_dir, given)
    if demonstrations is not None:
        demonstrations.tokenizer = models.tokenizer
    use_cuda = torch.cuda.is_available()
    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else not use_cuda
    if checkpointing:
        for model in (models.policy, models.value.body):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in models.policy.parameters() if p.requires_grad] + list(models.value.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5, foreach=True)
    models.policy, models.value, optimizer = accelerator.prepare(models.policy, models.value, optimizer)
    models.engine = rollout_engine_for(accelerator.unwrap_model(models.policy), config)
    models.updating(False)
    controller = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
    start, history = _checkpoint_load(output_dir, accelerator, models, optimizer, controller) if resume else (0, [])
    models.engine.load_weights(accelerator.unwrap_model(models.policy))  # a resumed policy's weights
    probes = probes_for(prompts_path, prompts, config, output_dir, start)
    prompts = held_back(prompts, probes.prompts)

    def probe_now(step: int) -> None:
        if accelerator.is_main_process and step in probes.steps:
            probe(probes, step, config, models, accelerator, partial(_scores, config, models))

    progress.phase("training")
    if start == 0:
        probe_now(0)
    started = time.monotonic()
    window: list[dict] = []
    for step in range(start, config.steps):
        iteration_started = time.monotonic()
        # Each process samples its own prompts: with N processes an iteration sees N x batch_size episodes.
        shard = step * accelerator.num_processes + accelerator.process_index
        batch_prompts = _prompts_for(shard, prompts, config.batch_size, config.seed)
        experience = _rollout(config, models, accelerator, batch_prompts, controller)
        stats = _update(config, models, accelerator, optimizer, trainable, experience, demonstrations)
        models.engine.load_weights(accelerator.unwrap_model(models.policy))  # the next samples are the new policy's
        if config.adaptive_kl:
            controller.update(float(experience.kl.sum(1).mean()), config.batch_size)
        done = step + 1
        metrics = _iteration_metrics(config, done, experience, stats, time.monotonic() - iteration_started)
        history.append(metrics)
        window.append(metrics)
        probe_now(done)
        if config.save_every and done % config.save_every == 0 and done < config.steps:
            _checkpoint_save(output_dir, done, accelerator, models, optimizer, controller, history)
        progress.update((done - start) / max(config.steps - start, 1))
        if done % config.logging_steps == 0 or done == config.steps:
            progress.log(mean_of_window(window))
            window = []

    progress.phase("saving")
    model_dir = _save_policy(config, output_dir, accelerator, models)
    first, last = (history[0], history[-1]) if history else ({}, {})
    summary = {
        "steps": config.steps,
        "episodes": config.steps * config.batch_size,
        "value_model_from": models.value_source,
        "first_score": first.get("score"),
        "last_score": last.get("score"),
        "last_kl": last.get("kl"),
        "eos_rate": float(np.mean([line["eos_rate"] for line in history])) if history else None,
        "seconds": round(time.monotonic() - started, 2),
        "probes": probe_means(probes.path),
    }
    if accelerator.is_main_process:
        written = {"model_dir": str(model_dir), "metrics": summary, "config": config.as_dict()}
        write_result(output_dir, written)
    progress.done(summary)
    return PPOResult(model_dir=str(model_dir), metrics=summary, config=config.as_dict(), history=history)
