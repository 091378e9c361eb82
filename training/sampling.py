"""Sampling from a causal language model, shared by every algorithm that generates: PPO's rollouts, the
responses written for the next round of comparisons, and SL-CAI's answers, critiques and revisions.

Pure sampling at a temperature (no top-k, no top-p), left-padded prompts (the policy's chat template when it
has one), responses cut after their first EOS; the engine that draws the tokens is ``training.rollout``'s.
"""

from dataclasses import dataclass
from typing import Protocol

import torch

from training.rollout import (  # noqa: F401 (the primitives other modules import from here)
    LoopEngine,
    RolloutEngine,
    cache_argument_name,
    draw,
    position_ids_for,
)
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


@dataclass
class Rollout:
    prompts: list[list[dict]]
    sequences: torch.Tensor  # (B, C + L) prompt and response tokens
    attention_mask: torch.Tensor  # (B, C + L) 0 on left padding and after each response's end
    context: int  # C
    mask: torch.Tensor  # (B, L) 1 on response tokens up to and including the first EOS
    logprobs: torch.Tensor  # (B, L) each drawn token's log-probability as the engine drew it (0 off the mask)
    has_eos: torch.Tensor  # (B,)
    texts: list[str]


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    eos: int,
    pad: int,
    engine: RolloutEngine | None = None,
) -> torch.Tensor:
    """The tokens ``engine`` (by default the loop on ``model``) draws after each left-padded prompt; tokens after
    a row's EOS are ``pad``."""
    engine = engine or LoopEngine(model)
    return engine.generate(
        input_ids, attention_mask, max_new_tokens=max_new_tokens, temperature=temperature, eos=eos, pad=pad
    ).tokens


@torch.no_grad()
def sample(
    policy, tokenizer, prompts: list[list[dict]], config: Sampling, device, engine: RolloutEngine | None = None
) -> Rollout:
    """Each prompt answered once by ``engine`` (by default the loop on ``policy``), as a ``Rollout``."""
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
    engine = engine or LoopEngine(policy)
    generated = engine.generate(
        query["input_ids"], query["attention_mask"], max_new_tokens=config.max_new_tokens,
        temperature=config.temperature, eos=eos, pad=tokenizer.pad_token_id,
    )  # fmt: skip
    response = generated.tokens
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
        logprobs=generated.logprobs * mask,
        has_eos=has_eos,
        texts=[reply.strip() for reply in replies],
    )
