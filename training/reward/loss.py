"""The listwise loss: each judgement's ranked pairs in one Bradley-Terry loss (with margin, or the soft-label
form for AI labels), judgements averaged with their source weights."""

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from training.reward.inputs import Batch, Pairs


def pair_losses(rewards: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """(P,) the loss of each ranked pair: Bradley-Terry with margin, or the soft-label form."""
    difference = rewards[pairs.winner] - rewards[pairs.loser]
    hard = -F.logsigmoid(difference - pairs.margin)
    p = torch.nan_to_num(pairs.probability, nan=1.0)
    soft = -(p * F.logsigmoid(difference) + (1 - p) * F.logsigmoid(-difference))
    return torch.where(torch.isnan(pairs.probability), hard, soft)


def listwise_loss(rewards: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """The mean pair loss of each judgement, averaged over judgements with their source weights."""
    prompts = pairs.weight.shape[0]
    per_pair = pair_losses(rewards, pairs)
    total = torch.zeros(prompts, device=rewards.device).index_add(0, pairs.prompt, per_pair)
    count = torch.zeros(prompts, device=rewards.device).index_add(0, pairs.prompt, torch.ones_like(per_pair))
    weight = pairs.weight * (count > 0)  # a judgement whose responses are all tied has nothing to learn from
    per_prompt = total / count.clamp(min=1)
    return (per_prompt * weight).sum() / weight.sum().clamp(min=1e-8)


def rewards_of(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """(N,) one scalar per response row."""
    return model(**batch.inputs).logits.squeeze(-1).float()
