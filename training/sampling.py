"""Sampling from a causal language model, shared by every algorithm that generates: PPO's rollouts, the
responses written for the next round of comparisons, and SL-CAI's answers, critiques and revisions.

Pure sampling at a temperature (no top-k, no top-p) with the KV cache, left-padded prompts (the policy's chat
template when it has one), responses cut after their first EOS.
"""

import inspect
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from training.text import policy_prompt, uses_chat_template


class Sampling(Protocol):
    """The sampling settings ``sample`` reads: ``SamplingConfig``, or an algorithm's config that has them."""

    @property
    def max_prompt_length(self) -> int: ...
    @property
    def max_new_tokens(self) -> int: ...
    @property
    def temperature(self) -> float: ...


@dataclass(frozen=True)
class SamplingConfig:
    max_prompt_length: int = 256  # prompts are cut from the left to this many tokens
    max_new_tokens: int = 256
    temperature: float = 0.7


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at the first real token of a left-padded row."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


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
def sample(policy, tokenizer, prompts: list[list[dict]], config: Sampling, device) -> Rollout:
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
