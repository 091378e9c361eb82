"""Passes without gradients: a reward model's scores in batches of similar length; its held-out loss,
accuracy and quality report; scoring for others (PPO); the normalisation of its scores."""

import random
from dataclasses import dataclass

import torch

from training.config import RewardConfig
from training.data import RankedPrompt, Reference
from training.reward import quality
from training.reward.inputs import (
    Encoded,
    Pairs,
    Reading,
    Row,
    by_length,
    pad,
    pad_id,
    pairs_of,
    tokenize,
    tokenize_examples,
)
from training.reward.loss import listwise_loss
from training.runtime import Progress


@torch.inference_mode()
def rewards_of_rows(
    model, rows: list[Row], pad_token_id: int, max_tokens: int, progress: Progress | None = None
) -> torch.Tensor:
    """(N,) the model's score of each row, in the rows' order, computed in batches of similar length."""
    training = model.training
    model.eval()
    device = next(model.parameters()).device
    rewards = torch.zeros(len(rows))
    done = 0
    for positions in by_length(rows, max_tokens):
        inputs = pad([rows[position] for position in positions], pad_token_id)
        output = model(**{key: value.to(device) for key, value in inputs.items()}).logits.squeeze(-1).float()
        rewards[torch.tensor(positions)] = output.cpu()
        done += len(positions)
        if progress is not None:
            progress.update(done / len(rows))
    model.train(training)
    return rewards


@dataclass
class Predictions:
    """A reward model's scores for held-out judgements: one per response, with the pairs between them."""

    rewards: torch.Tensor  # (N,)
    lengths: torch.Tensor  # (N,) tokens of each response's reply
    pairs: Pairs

    @property
    def difference(self) -> torch.Tensor:
        return self.rewards[self.pairs.winner] - self.rewards[self.pairs.loser]


def predict(model, encoded: list[Encoded], tokenizer, config: RewardConfig, progress=None) -> Predictions:
    rows = [row for item in encoded for row in item.rows]
    return Predictions(
        rewards=rewards_of_rows(model, rows, pad_id(tokenizer), config.eval_batch_tokens, progress),
        lengths=torch.tensor([len(row) for row in rows], dtype=torch.float64),
        pairs=pairs_of([item.example for item in encoded], config.use_margin, config.source_weights),
    )


def summary(predictions: Predictions) -> dict:
    """Held-out listwise loss (the training objective) and pairwise accuracy."""
    if predictions.pairs.winner.numel() == 0:
        return {}
    return {
        "eval_loss": float(listwise_loss(predictions.rewards, predictions.pairs)),
        "eval_accuracy": quality.accuracy(predictions.difference),
        "eval_pairs": int(predictions.pairs.winner.numel()),
    }


def evaluate(
    model, examples: list[RankedPrompt], tokenizer, config: RewardConfig, reading: Reading | None = None, progress=None
) -> dict:
    """Held-out listwise loss and pairwise accuracy (ties in reward count as half right), the text read as
    ``reading`` says (by default as ``config`` does)."""
    if not examples:
        return {}
    encoded = tokenize_examples(examples, tokenizer, reading or Reading.of(config))
    return summary(predict(model, encoded, tokenizer, config, progress))


def quality_report(predictions: Predictions, temperature: float) -> dict:
    """What a team reads before trusting the model: calibration before and after the temperature, accuracy by
    the raters' margin, and how much the reward follows length."""
    difference, probability = predictions.difference, predictions.pairs.probability
    return {
        "calibration": {
            "temperature": temperature,
            "ece_before": quality.calibration_error(difference, probability),
            "ece_after": quality.calibration_error(difference, probability, temperature),
            "ece_floor": quality.calibration_error_floor(difference, temperature),
            "log_loss_before": quality.log_loss(difference, probability),
            "log_loss_after": quality.log_loss(difference, probability, temperature),
        },
        "eval_accuracy_by_margin": quality.accuracy_by_margin(difference, predictions.pairs.rated_margin),
        **quality.length_bias(
            predictions.rewards, predictions.lengths, predictions.pairs.winner, predictions.pairs.loser
        ),
    }


def score(
    model,
    tokenizer,
    prompts: list[list[dict]],
    replies: list[str],
    max_length: int,
    batch_size: int = 32,
    progress: Progress | None = None,
):
    """Rewards for (prompt, reply) pairs, with the model as saved (its normalisation included), read the way
    it was trained to read them (up to ``max_length`` tokens)."""
    rows = tokenize(tokenizer, prompts, replies, Reading.saved_with(model, max_length))
    rewards = rewards_of_rows(model, rows, pad_id(tokenizer), batch_size * max_length, progress)
    return rewards - reward_offset(model)


def _scalar_head(model) -> torch.nn.Linear | None:
    heads = [module for module in model.modules() if isinstance(module, torch.nn.Linear) and module.out_features == 1]
    return heads[-1] if heads else None


def reward_offset(model) -> float:
    """What ``score`` subtracts: the normalisation that could not be folded into a bias of the head."""
    normalization = getattr(model.config, "reward_normalization", None) or {}
    return 0.0 if normalization.get("folded_into_bias", True) else float(normalization.get("offset", 0.0))


@torch.no_grad()
def normalize(
    model, tokenizer, references: list[Reference], config: RewardConfig, progress: Progress | None = None
) -> dict:
    """Shift the scores so that the reference replies average 0. The shift goes into the scoring head's
    bias when it has one (so any user of the saved model gets normalised scores), and is recorded in the
    model's config either way (``reward_normalization``)."""
    if 0 < config.normalize_samples < len(references):
        references = random.Random(config.seed).sample(references, config.normalize_samples)
    prompts, replies = [ref.prompt for ref in references], [ref.response for ref in references]
    rows = tokenize(tokenizer, prompts, replies, Reading.of(config))
    mean = float(rewards_of_rows(model, rows, pad_id(tokenizer), config.eval_batch_tokens, progress).mean())
    head = _scalar_head(model)
    folded = head is not None and head.bias is not None
    if head is not None and head.bias is not None:
        head.bias.sub_(mean)
    model.config.reward_normalization = {"offset": mean, "folded_into_bias": folded, "references": len(references)}
    return model.config.reward_normalization
