"""Reinforcement-learning arithmetic for policy-gradient trainers on language models: statistics over the
real tokens of left-padded batches, GAE, the adaptive KL controller (Ziegler et al. 2019), log-probabilities
and entropy of responses, and the value model (a transformer body with a scalar head at every position)."""

import copy
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.sampling import position_ids_for


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


class ValueModel(torch.nn.Module):
    """A transformer body and a scalar head read at every position: the value of each state."""

    body: PreTrainedModel
    head: torch.nn.Linear

    def __init__(self, body: PreTrainedModel, head: torch.nn.Linear) -> None:
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
    if reward_model is not None and shared_tokenizer and isinstance(head, torch.nn.Linear) and head.out_features == 1:
        body = cast(PreTrainedModel, copy.deepcopy(reward_model.base_model))
        return ValueModel(body, copy.deepcopy(head)), "reward model"
    body = cast(PreTrainedModel, copy.deepcopy(policy.base_model))
    head = torch.nn.Linear(policy.config.get_text_config().hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return ValueModel(body, head), "policy"


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
