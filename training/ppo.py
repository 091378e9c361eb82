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
import inspect
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from training.config import PPOConfig
from training.data import DataError, read_prompts, read_references
from training.models import disable_dropout, load_causal_lm, load_reward_model
from training.reward import score
from training.runtime import MetricsSink, Progress
from training.text import policy_prompt, uses_chat_template

RewardFunction = Callable[[list[list[dict]], list[str]], torch.Tensor]
"""Scores for (prompts, response texts): a fixed function in place of a reward model (tests, rule rewards)."""


# --- small tensor helpers ------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns; ``rewards`` and ``values`` are zero after each response's end."""
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


class AdaptiveKLController:
    """Ziegler et al. (2019): beta grows when the KL overshoots the target and shrinks when it falls short."""

    def __init__(self, beta: float, target: float, horizon: int) -> None:
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, episodes: int) -> None:
        error = float(np.clip(kl / self.target - 1, -0.2, 0.2))
        self.beta *= 1 + error * episodes / self.horizon


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


# --- models --------------------------------------------------------------------------------------------------


class ValueModel(torch.nn.Module):
    """A transformer body and a scalar head read at every position: the value of each state."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        hidden = self.body(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return self.head(hidden.last_hidden_state).squeeze(-1)


def same_vocabulary(first: PreTrainedTokenizerBase, second: PreTrainedTokenizerBase) -> bool:
    return first is second or first.get_vocab() == second.get_vocab()


def value_model_for(policy: PreTrainedModel, reward_model: PreTrainedModel | None, shared_tokenizer: bool):
    """From the reward model when it reads the policy's tokens and scores every position with a linear
    ``score`` layer (decoder sequence classifiers: GPT-2, Llama, ...), else from the policy's body with a new
    zero head. Returns the model and where it came from."""
    head = getattr(reward_model, "score", None)
    if shared_tokenizer and isinstance(head, torch.nn.Linear) and head.out_features == 1:
        return ValueModel(copy.deepcopy(reward_model.base_model), copy.deepcopy(head)), "reward model"
    body = copy.deepcopy(policy.base_model)
    head = torch.nn.Linear(policy.config.get_text_config().hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return ValueModel(body, head), "policy"


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at the first real token of a left-padded row."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def response_logprobs(
    model, sequences: torch.Tensor, attention_mask: torch.Tensor, context: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the response tokens (after ``context`` prompt tokens) at the given temperature,
    and the logits they came from."""
    keep = sequences.shape[1] - context + 1  # the language-model head runs on these positions only
    logits = model(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_for(attention_mask),
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    logits = logits[:, -keep:-1].float() / temperature
    tokens = sequences[:, context:]
    logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)
    return logprobs, logits


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    probabilities = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(-1)


# --- the rollout ---------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    prompts: list[list[dict]]
    sequences: torch.Tensor  # (B, C + L) prompt and response tokens
    attention_mask: torch.Tensor  # (B, C + L) 0 on left padding and after each response's end
    context: int  # C
    mask: torch.Tensor  # (B, L) 1 on response tokens up to and including the first EOS
    has_eos: torch.Tensor  # (B,)
    texts: list[str]


def draw(probabilities: torch.Tensor) -> torch.Tensor:
    """One token per row, drawn from the row's distribution by its inverse CDF: the first token whose
    cumulative probability exceeds a uniform draw. Several times faster than ``torch.multinomial`` on a CPU."""
    cumulative = probabilities.cumsum(dim=-1)
    uniform = torch.rand(probabilities.shape[0], 1, device=probabilities.device) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(1).clamp(max=probabilities.shape[-1] - 1)


def cache_argument_name(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache``; a peft wrapper hides the signature of the model
    it wraps."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    eos: int,
    pad: int,
) -> torch.Tensor:
    """Pure sampling at ``temperature`` (no top-k, no top-p) with the KV cache, until every row has ended or
    ``max_new_tokens``; tokens after a row's EOS are ``pad``. The loop ``generate()`` would run, without its
    per-token bookkeeping, which costs more than a small model's forward pass."""
    cache = DynamicCache(config=model.config)
    cache_argument = cache_argument_name(model)
    rows = input_ids.shape[0]
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    positions = position_ids_for(attention_mask)
    step_ids, step_positions, mask = input_ids, positions, attention_mask
    tokens = []
    for _ in range(max_new_tokens):
        output = model(
            input_ids=step_ids, attention_mask=mask, position_ids=step_positions, use_cache=True, logits_to_keep=1,
            **{cache_argument: cache},
        )  # fmt: skip
        token = draw(F.softmax(output.logits[:, -1].float() / temperature, dim=-1))
        token = torch.where(finished, torch.full_like(token, pad), token)
        tokens.append(token)
        finished |= token == eos
        if bool(finished.all()):
            break
        step_ids, step_positions = token.unsqueeze(1), step_positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def sample(policy, tokenizer, prompts: list[list[dict]], config: PPOConfig, device) -> Rollout:
    texts = [policy_prompt(tokenizer, prompt) for prompt in prompts]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    query = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=config.max_prompt_length,
        return_tensors="pt",
        add_special_tokens=not uses_chat_template(tokenizer),
    ).to(device)
    eos = tokenizer.eos_token_id
    context = query["input_ids"].shape[1]
    response = generate(
        policy, query["input_ids"], query["attention_mask"], config.max_new_tokens, config.temperature, eos,
        tokenizer.pad_token_id,
    )  # fmt: skip
    is_eos = response == eos
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), response.shape[1] - 1)
    positions = torch.arange(response.shape[1], device=device).unsqueeze(0)
    mask = (positions <= first_eos.unsqueeze(1)).long()
    response = torch.where(mask.bool(), response, tokenizer.pad_token_id)
    replies = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Rollout(
        prompts=prompts,
        sequences=torch.cat([query["input_ids"], response], dim=1),
        attention_mask=torch.cat([query["attention_mask"], mask], dim=1),
        context=context,
        mask=mask.float(),
        has_eos=has_eos,
        texts=[reply.strip() for reply in replies],
    )


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
    chosen, position = [], step * batch_size
    while len(chosen) < batch_size:
        epoch, offset = divmod(position, len(prompts))
        chosen.append(prompts[_prompt_order(len(prompts), seed, epoch)[offset]])
        position += 1
    return chosen


def _random_states() -> dict:
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    folders = sorted((Path(output_dir) / "checkpoints").glob("step-*"), key=lambda path: int(path.name[5:]))
    return folders[-1] if folders else None


class _Demonstrations:
    """PPO-ptx: random minibatches of demonstrations, with labels on the reply only."""

    def __init__(self, path: str | Path, tokenizer, config: PPOConfig) -> None:
        self.items = read_references(path)
        if not self.items:
            raise DataError(f"{Path(path).name} holds no demonstrations.")
        self.tokenizer, self.config = tokenizer, config

    def batch(self, device) -> dict[str, torch.Tensor]:
        picks = [self.items[i] for i in torch.randint(len(self.items), (self.config.ptx_batch_size,)).tolist()]
        eos = self.tokenizer.eos_token or ""
        rows, labels = [], []
        for item in picks:
            prompt = self.tokenizer(policy_prompt(self.tokenizer, item.prompt), add_special_tokens=False)["input_ids"]
            reply = self.tokenizer(item.response + eos, add_special_tokens=False)["input_ids"]
            limit = self.config.max_prompt_length + self.config.max_new_tokens
            ids = (prompt + reply)[-limit:]
            rows.append(ids)
            labels.append(([-100] * len(prompt) + reply)[-limit:])
        width = max(len(ids) for ids in rows)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids in rows], device=device),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows], device=device),
            "labels": torch.tensor([row + [-100] * (width - len(row)) for row in labels], device=device),
        }


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
    use_cuda = torch.cuda.is_available()
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(
        mixed_precision="bf16" if use_cuda and config.bf16 and torch.cuda.is_bf16_supported() else "no",
        cpu=not use_cuda,
    )
    device = accelerator.device
    prompts = read_prompts(prompts_path)
    demonstrations = _Demonstrations(ptx_path, tokenizer, config) if config.ptx_coef > 0 else None

    # Models: the policy and the frozen reference, the frozen reward model, the value model.
    if policy is None or tokenizer is None:
        policy, tokenizer = load_causal_lm(config.policy, cache_dir)
    if demonstrations is not None:
        demonstrations.tokenizer = tokenizer
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
        reference = copy.deepcopy(policy).requires_grad_(False).eval().to(device)
    if reward_model is not None:
        reward_model.requires_grad_(False).eval().to(device)

    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else not use_cuda
    if checkpointing:
        for model in (policy, value.body):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in policy.parameters() if p.requires_grad] + list(value.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5, foreach=True)
    policy, value, optimizer = accelerator.prepare(policy, value, optimizer)

    def updating(on: bool) -> None:
        """Dropout is off in every model, so train mode changes one thing: gradient checkpointing (which
        transformers applies in train mode only) is on for the passes that update, off for sampling."""
        policy.train(on)
        value.train(on)

    updating(False)
    controller = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)

    start = 0
    history: list[dict] = []
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint / "state.pt", weights_only=False, map_location="cpu")
        accelerator.unwrap_model(policy).load_state_dict(state["policy"])
        accelerator.unwrap_model(value).load_state_dict(state["value"])
        optimizer.load_state_dict(state["optimizer"])
        controller.beta = state["beta"]
        start, history = state["step"], state["history"]
        _restore_random_states(state["random"])

    def save_checkpoint(step: int) -> None:
        if not accelerator.is_main_process:
            return
        folder = output_dir / "checkpoints" / f"step-{step}"
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "policy": accelerator.unwrap_model(policy).state_dict(),
            "value": accelerator.unwrap_model(value).state_dict(),
            "optimizer": optimizer.state_dict(),
            "beta": controller.beta,
            "history": history,
            "random": _random_states(),
        }
        torch.save(state, partial / "state.pt")
        partial.rename(folder)
        for older in (output_dir / "checkpoints").glob("step-*"):
            if older != folder and not older.name.endswith(".partial"):
                for file in older.iterdir():
                    file.unlink()
                older.rmdir()

    progress.phase("training")
    started = time.monotonic()
    window: list[dict] = []
    for step in range(start, config.steps):
        iteration_started = time.monotonic()
        # Each process samples its own prompts: with N processes an iteration sees N x batch_size episodes.
        shard = step * accelerator.num_processes + accelerator.process_index
        batch_prompts = _prompts_for(shard, prompts, config.batch_size, config.seed)
        unwrapped = accelerator.unwrap_model(policy)
        with accelerator.autocast():
            rollout = sample(unwrapped, tokenizer, batch_prompts, config, device)

        # Score, log-probabilities under policy and reference, values: all before any update.
        with torch.no_grad(), accelerator.autocast():
            if reward_function is not None:
                scores = torch.as_tensor(reward_function(batch_prompts, rollout.texts), dtype=torch.float32)
            else:
                scores = score(
                    reward_model, reward_tokenizer, batch_prompts, rollout.texts, config.reward_max_length,
                    batch_size=config.mini_batch_size,
                )  # fmt: skip
            scores = scores.to(device).float()
            raw_scores = scores.clone()
            scores = penalise_missing_eos(scores, rollout.has_eos, config)
            sequences, attention, context, mask = (
                rollout.sequences, rollout.attention_mask, rollout.context, rollout.mask,
            )  # fmt: skip
            if reference is None:
                with unwrapped.disable_adapter():
                    ref_logprobs, _ = response_logprobs(policy, sequences, attention, context, config.temperature)
            else:
                ref_logprobs, _ = response_logprobs(reference, sequences, attention, context, config.temperature)
            ref_logprobs = ref_logprobs * mask

        # With one pass over one minibatch, the forward pass of the update is the one taken before it: reuse
        # it (the ratio is then exactly 1, as in PPO's first pass) and save a forward pass of each model.
        single_pass = config.ppo_epochs == 1 and config.mini_batch_size == config.batch_size
        updating(single_pass)
        with torch.set_grad_enabled(single_pass), accelerator.autocast():
            first_logprobs, first_logits = response_logprobs(policy, sequences, attention, context, config.temperature)
            first_values = value(sequences, attention, position_ids_for(attention))[:, context - 1 : -1].float()
        with torch.no_grad():
            old_logprobs, old_values = first_logprobs.detach() * mask, first_values.detach() * mask
            kl = (old_logprobs - ref_logprobs) * mask
            beta = controller.beta
            rewards = -beta * kl
            last = (mask.sum(1) - 1).long()
            rewards[torch.arange(len(last), device=device), last] += scores
            if config.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
            advantages, returns = gae(rewards, old_values, config.gamma, config.lam)
            advantages = masked_whiten(advantages, mask) * mask

        # Update: several passes over minibatches.
        stats = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approxkl": [], "entropy": [], "ptx_loss": []}
        updating(True)
        for _ in range(config.ppo_epochs):
            order = torch.randperm(config.batch_size).tolist()
            for first in range(0, config.batch_size, config.mini_batch_size):
                rows = torch.tensor(order[first : first + config.mini_batch_size], device=device)
                mb_mask = mask[rows]
                if single_pass:
                    logprobs, logits, values = first_logprobs[rows], first_logits[rows], first_values[rows]
                else:
                    with accelerator.autocast():
                        logprobs, logits = response_logprobs(
                            policy, sequences[rows], attention[rows], context, config.temperature
                        )
                        values = value(sequences[rows], attention[rows], position_ids_for(attention[rows]))
                    values = values[:, context - 1 : -1].float()
                clipped_values = old_values[rows] + (values - old_values[rows]).clamp(
                    -config.cliprange_value, config.cliprange_value
                )
                value_loss = 0.5 * masked_mean(
                    torch.max((values - returns[rows]) ** 2, (clipped_values - returns[rows]) ** 2), mb_mask
                )
                log_ratio = (logprobs - old_logprobs[rows]) * mb_mask
                ratio = torch.exp(log_ratio)
                mb_advantages = advantages[rows]
                policy_loss = masked_mean(
                    torch.max(
                        -mb_advantages * ratio,
                        -mb_advantages * ratio.clamp(1 - config.cliprange, 1 + config.cliprange),
                    ),
                    mb_mask,
                )
                loss = policy_loss + config.vf_coef * value_loss
                if demonstrations is not None:
                    with accelerator.autocast():
                        ptx_loss = policy(**demonstrations.batch(device)).loss
                    loss = loss + config.ptx_coef * ptx_loss
                    stats["ptx_loss"].append(float(ptx_loss.detach()))
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    stats["policy_loss"].append(float(policy_loss))
                    stats["value_loss"].append(float(value_loss))
                    clipped = ((ratio - 1).abs() > config.cliprange).float()
                    stats["clipfrac"].append(float(masked_mean(clipped, mb_mask)))
                    stats["approxkl"].append(float(0.5 * masked_mean(log_ratio**2, mb_mask)))
                    stats["entropy"].append(float(masked_mean(entropy_of(logits.detach()), mb_mask)))
        updating(False)

        mean_kl = float(kl.sum(1).mean())
        if config.adaptive_kl:
            controller.update(mean_kl, config.batch_size)
        done = step + 1
        metrics = {
            "step": done,
            "total_steps": config.steps,
            "score": float(raw_scores.mean()),
            "score_with_penalty": float(scores.mean()),
            "kl": mean_kl,
            "beta": beta,
            "entropy": float(np.mean(stats["entropy"])),
            "clipfrac": float(np.mean(stats["clipfrac"])),
            "approxkl": float(np.mean(stats["approxkl"])),
            "policy_loss": float(np.mean(stats["policy_loss"])),
            "value_loss": float(np.mean(stats["value_loss"])),
            "response_length": float(mask.sum(1).mean()),
            "eos_rate": float(rollout.has_eos.float().mean()),
            "episodes_per_s": config.batch_size / (time.monotonic() - iteration_started),
        }
        metrics["samples"] = [
            {"prompt": prompt, "response": text, "score": float(value)}
            for prompt, text, value in list(zip(batch_prompts, rollout.texts, raw_scores.tolist(), strict=True))[:3]
        ]
        if stats["ptx_loss"]:
            metrics["ptx_loss"] = float(np.mean(stats["ptx_loss"]))
        history.append(metrics)
        window.append(metrics)
        if config.save_every and done % config.save_every == 0 and done < config.steps:
            save_checkpoint(done)
        progress.update((done - start) / max(config.steps - start, 1))
        if done % config.logging_steps == 0 or done == config.steps:
            progress.log(mean_of_window(window))
            window = []

    # The trained policy, as a plain model with its tokenizer.
    progress.phase("saving")
    accelerator.wait_for_everyone()
    model_dir = output_dir / "model"
    final = accelerator.unwrap_model(policy)
    if config.lora:
        final = final.merge_and_unload()
    if accelerator.is_main_process:
        final.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    first, last = (history[0], history[-1]) if history else ({}, {})
    summary = {
        "steps": config.steps,
        "episodes": config.steps * config.batch_size,
        "value_model_from": value_source,
        "first_score": first.get("score"),
        "last_score": last.get("score"),
        "last_kl": last.get("kl"),
        "eos_rate": float(np.mean([line["eos_rate"] for line in history])) if history else None,
        "seconds": round(time.monotonic() - started, 2),
    }
    if accelerator.is_main_process:
        written = {"model_dir": str(model_dir), "metrics": summary, "config": config.as_dict()}
        (output_dir / "result.json").write_text(json.dumps(written, indent=2))
    progress.done(summary)
    return PPOResult(model_dir=str(model_dir), metrics=summary, config=config.as_dict(), history=history)
