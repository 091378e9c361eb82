"""Listwise reward-model training (InstructGPT, section 3.5).

A K-wise ranking of one prompt is one batch element: its K responses get one forward pass each, and all
C(K,2) comparisons between them enter the loss together:

    loss(prompt) = -1 / (number of ranked pairs) * sum over ranked pairs (w, l) of log sigmoid(r_w - r_l - margin)

Tied responses form no pair. A judgement with a preference probability p (a soft AI label) uses
-(p log sigmoid(d) + (1 - p) log sigmoid(-d)) with d = r_w - r_l instead. Each prompt's loss is weighted by
its source (human, ai). Trainers that cut rankings into pairs encode each response K - 1 times and scatter
the pairs of one prompt over batches; this does neither.

- ``inputs``: every (prompt, reply) tokenised once and truncated to keep the reply and the final turns, read
  as the model's ``Reading`` (saved with it) says; batches of similar length.
- ``loss``: the listwise loss.
- ``scoring``: passes without gradients: evaluation, scoring, normalisation.
- ``train``: the loop (``train_reward_model``).
- ``quality``: calibration (the temperature stored with the model), accuracy by margin, length bias, and
  which epoch early stopping keeps.
"""

from training.reward.inputs import Batch, Encoded, Pairs, Reading, collate, pairs_of, tokenize, tokenize_examples
from training.reward.loss import listwise_loss, pair_losses
from training.reward.scoring import evaluate, normalize, predict, reward_offset, score
from training.reward.train import RewardResult, train_reward_model

__all__ = [
    "Batch", "Encoded", "Pairs", "Reading", "RewardResult", "collate", "evaluate", "listwise_loss", "normalize",
    "pair_losses", "pairs_of", "predict", "reward_offset", "score", "tokenize", "tokenize_examples",
    "train_reward_model",
]  # fmt: skip
