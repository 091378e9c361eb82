"""DPO with trl.DPOTrainer: on pairs with a known answer, a tiny policy learns to prefer the chosen replies (their
log-probability margin over the rejected ones rises well above where it started), through the library function
and the trainer's command line."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.training.test_rollout import llama_policy
from training.cli import main
from training.config import DPOConfig
from training.dpo import dpo_pairs, preference_margin, replies_logprob, reply_logprob, train_dpo
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer
from training.runtime import METRICS_FILE

WORDS = [f"w{i}" for i in range(12)] + ["say", "twice"]


def preferences(tmp_path, ranking: bool = False):
    """Prompt "say wi twice": "wi wi" is preferred to the next word twice (and, in a ranking, to the one after)."""
    path = tmp_path / ("ranking.jsonl" if ranking else "preference.jsonl")
    rows = []
    for i in range(12):
        right, wrong, worse = f"w{i} w{i}", f"w{(i + 1) % 12} w{(i + 1) % 12}", f"w{(i + 2) % 12} w{(i + 2) % 12}"
        if ranking:
            rows.append({"prompt": f"say w{i} twice", "responses": [wrong, right, worse], "ranking": [[1], [0, 2]]})
        else:
            rows.append({"prompt": f"say w{i} twice", "chosen": right, "rejected": wrong})
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_a_tiny_policy_learns_to_prefer_the_chosen_replies(tmp_path):
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    model = tiny_causal_lm(tokenizer, layers=2, hidden=64, seed=1)
    config = DPOConfig(epochs=30, learning_rate=3e-3, batch_size=6, logging_steps=2, warmup_ratio=0.0, beta=0.1)
    seen = []
    result = train_dpo(
        config, preferences(tmp_path), tmp_path / "out", model=model, tokenizer=tokenizer, on_metrics=seen.append
    )
    metrics = result.metrics
    assert metrics["pairs"] == 12 and metrics["margin_pairs"] == 12
    assert abs(metrics["margin_before"]) < 2  # a random policy has no preference
    assert metrics["margin_after"] > metrics["margin_before"] + 5
    assert metrics["last_loss"] < metrics["first_loss"]
    curve = [line for line in seen if "margin" in line and "step" in line]
    assert curve and curve[-1]["preference_accuracy"] == 1.0
    # Measuring the margin, before training and on the saved policy, reports its progress to the last pair.
    for phase in ("measuring", "checking"):
        reported = [line["phase_progress"] for line in seen if line.get("phase") == phase and "phase_progress" in line]
        assert reported[-1] == 1.0 and reported == sorted(reported), (phase, reported)
    # The saved policy is the trained one: it measures the same margin after loading.
    saved = AutoModelForCausalLM.from_pretrained(result.model_dir)
    saved_tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    pairs = dpo_pairs(preferences(tmp_path))
    assert abs(preference_margin(saved, saved_tokenizer, pairs) - metrics["margin_after"]) < 1e-3


def test_a_ranking_gives_every_ordered_pair_and_the_command_line_trains_on_it(tmp_path):
    assert len(dpo_pairs(preferences(tmp_path, ranking=True))) == 24  # [[1], [0, 2]]: two pairs per task
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tiny_causal_lm(tokenizer, layers=2, hidden=32).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    out = tmp_path / "dpo-run"
    argv = ["dpo", "--data", str(preferences(tmp_path, ranking=True)), "--model", str(tmp_path / "policy"),
            "--out", str(out), "--metrics", str(out / METRICS_FILE), "--epochs", "4", "--batch-size", "8",
            "--learning-rate", "0.003", "--logging-steps", "1", "--margin-pairs", "24"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["margin_after"] > result["metrics"]["margin_before"]
    assert (out / "model" / "config.json").exists()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_replies_scored_from_the_prompts_cache_score_as_the_whole_sequence_does(architecture):
    """The prompt runs once and each reply goes on from a copy of its cache: the log-probabilities are those of
    running prompt and reply together, for both replies (the first must not leave its tokens in the cache)."""
    if architecture == "llama":
        model, tokenizer = llama_policy()
    else:
        tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
        model = tiny_causal_lm(tokenizer, layers=2, hidden=64, seed=3).eval()
    prompt = "say w1 twice say w2 twice say w3"
    replies = ["w1 w1", "w2 w3 w4 w5", "twice"]
    together = [reply_logprob(model, tokenizer, prompt, reply) for reply in replies]
    cached = replies_logprob(model, tokenizer, prompt, replies)
    assert cached == pytest.approx(together, abs=1e-4)
    assert len(set(round(value, 3) for value in cached)) == 3  # three different replies, three scores
