"""The listwise reward trainer: the loss is what the paper says, a tiny model learns a task with a known
answer, and normalised scores survive saving and loading. No Django here: training/ is a plain library."""

import json
import math
import random
import re
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from training.config import RewardConfig
from training.data import DataError, RankedPrompt, read_rankings, read_references
from training.models import tiny_reward_model, tiny_tokenizer
from training.reward import listwise_loss, pairs_of, score, train_reward_model
from training.runtime import HELD_OUT_JUDGEMENTS

ROOT = Path(__file__).resolve().parents[2]
WORDS = [f"w{i}" for i in range(20)] + ["good", "bad"]
PROMPTS = [f"q{i}" for i in range(60)]


def value(text: str) -> int:
    words = text.split()
    return words.count("good") - words.count("bad")


def synthetic_rankings(path: Path, judgements: int, k: int = 4, seed: int = 0) -> Path:
    """A ranking task with a known answer: a response is better the more "good" and the fewer "bad" it holds."""
    rng = random.Random(seed)
    with open(path, "w") as out:
        for index in range(judgements):
            responses = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(k)]
            values = sorted({value(response) for response in responses}, reverse=True)
            ranking = [[i for i, response in enumerate(responses) if value(response) == v] for v in values]
            out.write(
                json.dumps(
                    {
                        "prompt": PROMPTS[index % len(PROMPTS)],
                        "responses": responses,
                        "ranking": ranking,
                        "judgement_id": 1000 + index,
                    }
                )
                + "\n"  # fmt: skip
            )
    return path


def batch_for(rewards_per_prompt: list[list[float]], examples: list[RankedPrompt], config=None):
    config = config or RewardConfig()
    batch = pairs_of(examples, config.use_margin, config.source_weights)
    rewards = torch.tensor([reward for rewards in rewards_per_prompt for reward in rewards])
    return rewards, batch


def example(ranking, k, **fields) -> RankedPrompt:
    return RankedPrompt(
        prompt=[{"role": "user", "content": "q0"}], responses=[f"w{i}" for i in range(k)], ranking=ranking, **fields
    )


class TestLoss:
    def test_the_listwise_loss_is_the_mean_bradley_terry_loss_over_all_pairs_of_a_ranking(self):
        r = [1.3, -0.2, 0.7, 2.1]
        ranking = [[3], [0], [2], [1]]
        rewards, batch = batch_for([r], [example(ranking, 4)])
        order = [group[0] for group in ranking]
        pairs = list(combinations(order, 2))
        expected = torch.stack([-F.logsigmoid(torch.tensor(r[better] - r[worse])) for better, worse in pairs]).mean()
        assert len(pairs) == math.comb(4, 2) == batch.winner.numel()
        assert listwise_loss(rewards, batch).item() == pytest.approx(expected.item(), abs=1e-6)

    def test_tied_responses_form_no_pair(self):
        r = [0.5, 0.1, -1.0]
        rewards, batch = batch_for([r], [example([[0, 1], [2]], 3)])
        expected = (-F.logsigmoid(torch.tensor(0.5 + 1.0)) - F.logsigmoid(torch.tensor(0.1 + 1.0))) / 2
        assert batch.winner.numel() == 2
        assert listwise_loss(rewards, batch).item() == pytest.approx(expected.item(), abs=1e-6)

    def test_a_margin_is_subtracted_and_a_soft_label_mixes_both_directions(self):
        rewards, batch = batch_for([[1.0, 0.0]], [example([[0], [1]], 2, margin=2.0)])
        assert listwise_loss(rewards, batch).item() == pytest.approx(-F.logsigmoid(torch.tensor(-1.0)).item(), abs=1e-6)
        rewards, batch = batch_for([[1.0, 0.0]], [example([[0], [1]], 2, probability=0.7, source="ai")])
        d = torch.tensor(1.0)
        expected = -(0.7 * F.logsigmoid(d) + 0.3 * F.logsigmoid(-d))
        assert listwise_loss(rewards, batch).item() == pytest.approx(expected.item(), abs=1e-6)

    def test_each_prompt_counts_once_whatever_its_k_with_its_source_weight(self):
        config = RewardConfig(source_weights={"human": 1.0, "ai": 3.0})
        examples = [example([[0], [1], [2], [3]], 4), example([[1], [0]], 2, source="ai")]
        rewards, batch = batch_for([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0]], examples, config)
        first = torch.stack([-F.logsigmoid(torch.tensor(float(b - a))) for a, b in combinations(range(4), 2)]).mean()
        second = -F.logsigmoid(torch.tensor(1.0))
        assert listwise_loss(rewards, batch).item() == pytest.approx(((first + 3 * second) / 4).item(), abs=1e-6)


def test_a_tiny_model_learns_a_ranking_task_with_a_known_answer(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=600)
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    model = tiny_reward_model(tokenizer)
    lines = []
    config = RewardConfig(
        epochs=2, learning_rate=3e-3, prompts_per_batch=16, eval_fraction=0.2, logging_steps=5, max_length=64
    )
    result = train_reward_model(
        config, data, tmp_path / "out", model=model, tokenizer=tokenizer, on_metrics=lines.append
    )
    steps = [line for line in lines if "loss" in line]
    assert steps[0]["loss"] > 0.5 > steps[-1]["loss"]
    evaluations = [line for line in lines if "eval_accuracy" in line]
    assert evaluations[-1]["eval_accuracy"] >= 0.9
    assert result.metrics["eval_accuracy"] >= 0.9 and result.metrics["eval_pairs"] > 100
    assert lines[-1]["event"] == "done"
    # Each held-out judgement's verdict, by its id, for the product's rater audit: the same accuracy, judged
    # on judgements the model never trained on.
    verdicts = [json.loads(line) for line in (tmp_path / "out" / HELD_OUT_JUDGEMENTS).read_text().splitlines()]
    assert 0.8 * result.metrics["eval_prompts"] < len(verdicts) <= result.metrics["eval_prompts"]  # all tied: none
    assert all(verdict["judgement_id"] >= 1000 for verdict in verdicts)
    pairs = sum(verdict["pairs"] for verdict in verdicts)
    assert pairs == result.metrics["eval_pairs"]
    assert sum(verdict["agreed"] for verdict in verdicts) / pairs == pytest.approx(result.metrics["eval_accuracy"])


def test_each_curve_point_is_the_mean_of_the_steps_it_covers(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=200)
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)

    def train(out: str, logging_steps: int):
        lines = []
        config = RewardConfig(
            epochs=1, learning_rate=3e-3, prompts_per_batch=16, logging_steps=logging_steps, max_length=64
        )
        result = train_reward_model(
            config, data, tmp_path / out, model=tiny_reward_model(tokenizer), tokenizer=tokenizer,
            on_metrics=lines.append,
        )  # fmt: skip
        return result, [line for line in lines if "loss" in line]

    _, every_step = train("every", 1)
    total = len(every_step)
    assert total >= 5
    _, points = train("coarse", total - 2)  # a point after total - 2 steps, then one for the 2 left
    assert [point["step"] for point in points] == [total - 2, total]
    mean_of = lambda lines: sum(line["loss"] for line in lines) / len(lines)  # noqa: E731
    assert points[0]["loss"] == pytest.approx(mean_of(every_step[:-2]), rel=1e-4)
    assert points[1]["loss"] == pytest.approx(mean_of(every_step[-2:]), rel=1e-4)


def test_a_baseline_reward_model_is_evaluated_on_the_same_held_out_prompts_read_its_own_way(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=200)
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    config = RewardConfig(epochs=1, learning_rate=3e-3, prompts_per_batch=16, max_length=64, eval_fraction=0.2)
    first = train_reward_model(config, data, tmp_path / "a", model=tiny_reward_model(tokenizer), tokenizer=tokenizer)
    config.max_length = 6  # the new run cuts every reply; the baseline still reads its whole 10-token rows
    second = train_reward_model(
        config, data, tmp_path / "b", model=tiny_reward_model(tokenizer, seed=1), tokenizer=tokenizer,
        baseline=first.model_dir,
    )  # fmt: skip
    assert second.metrics["baseline_eval_pairs"] == second.metrics["eval_pairs"] == first.metrics["eval_pairs"]
    assert second.metrics["baseline_eval_accuracy"] == pytest.approx(first.metrics["eval_accuracy"], abs=1e-6)


def test_normalised_scores_average_zero_and_survive_saving(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=200)
    references = tmp_path / "sft.jsonl"
    references.write_text(
        "".join(json.dumps({"prompt": "q1", "completion": "good good w1 w2"}) + "\n" for _ in range(3))
    )
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    model = tiny_reward_model(tokenizer)
    config = RewardConfig(epochs=1, learning_rate=3e-3, prompts_per_batch=16, max_length=64)
    result = train_reward_model(
        config, data, tmp_path / "out", reference_path=references, model=model, tokenizer=tokenizer
    )

    reference = read_references(references)
    prompts, replies = [r.prompt for r in reference], [r.response for r in reference]
    before = score(model, tokenizer, prompts, replies, 64)
    assert abs(before.mean().item()) < 1e-3
    assert result.metrics["normalization"]["references"] == 3

    reloaded = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    mixed = [*replies, "bad bad w3", "w4 good"]
    again = score(reloaded, reloaded_tokenizer, [prompts[0]] * len(mixed), mixed, 64)
    assert torch.allclose(again[:3], before, atol=1e-5)
    assert abs(again[:3].mean().item()) < 1e-3


def test_rankings_are_split_by_prompt_and_preference_files_read_as_pairs(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=300)
    train, held_out = read_rankings(data).split(0.25, seed=1)
    assert {json.dumps(e.prompt) for e in train}.isdisjoint({json.dumps(e.prompt) for e in held_out})
    assert len(held_out) > 0
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q1", "chosen": "good", "rejected": "bad", "margin": 1.5}) + "\n")
    (only,) = read_rankings(pairs).examples
    assert (only.responses, only.ranking, only.margin) == (["good", "bad"], [[0], [1]], 1.5)


def test_a_conversation_lands_on_the_same_side_of_the_split_as_messages_or_as_exported_text(tmp_path):
    """Two snapshots of one project, one written as text and one as messages, split alike: a model trained on
    one is never scored on prompts it trained on when it is the baseline of a model trained on the other."""
    follow_up = [{"role": "assistant", "content": "w1"}, {"role": "user", "content": "w2"}]
    conversations = [[{"role": "user", "content": f"q{i}"}, *(follow_up if i % 2 else [])] for i in range(60)]

    def written(turns: list[dict], as_text: bool):  # as the exports write a prompt
        if not as_text:
            return turns
        return "\n\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in turns) if len(turns) > 1 \
            else turns[0]["content"]  # fmt: skip

    held_out = {}
    for as_text in (False, True):
        path = tmp_path / f"{as_text}.jsonl"
        path.write_text("".join(
            json.dumps({"prompt": written(turns, as_text), "responses": ["good", "bad"], "ranking": [[0], [1]]}) + "\n"
            for turns in conversations
        ))  # fmt: skip
        _, evaluation = read_rankings(path).split(0.25, seed=3)
        held_out[as_text] = [re.search(r"q\d+", example.prompt[0]["content"]).group() for example in evaluation]
    assert len(held_out[False]) == 15 and held_out[False] == held_out[True]


def test_the_command_line_trains_writes_metrics_lines_and_refuses_bad_data_cleanly(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=120)
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    base = tmp_path / "tiny"
    tiny_reward_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    metrics = tmp_path / "metrics.jsonl"
    command = [sys.executable, "-m", "training", "reward", "--data", str(data), "--model", str(base),
               "--out", str(tmp_path / "out"), "--metrics", str(metrics),
               "--logging-steps", "1", "--max-length", "64"]  # fmt: skip
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [line for line in lines if "step" in line and not line.get("event")]
    assert steps[0]["step"] == 1 and "eta_s" in steps[0] and lines[-1]["event"] == "done"
    assert [line["phase"] for line in lines if line.get("event") == "phase"] == [
        "loading", "training", "evaluating", "normalising", "saving",
    ]  # fmt: skip
    assert (tmp_path / "out" / "model" / "config.json").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "responses": ["a", "b"], "ranking": [[0], [0]]}\n')
    failed = subprocess.run(
        [*command[:5], str(bad), *command[6:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert failed.stderr.strip() == "error: bad.jsonl, record 1: the ranking must place every response once"


def test_the_trainer_is_a_library_without_django():
    code = "import sys, training.reward, training.cli; print('django' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr


def test_the_default_cpu_backbone_loads_offline_with_one_output_and_no_dropout():
    from training.models import load_reward_model

    model, tokenizer = load_reward_model("minilm-l6")
    assert model.config.num_labels == 1
    assert tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token
    assert tokenizer.padding_side == "right"
    assert all(module.p == 0.0 for module in model.modules() if isinstance(module, torch.nn.Dropout))
    rewards = score(model, tokenizer, [[{"role": "user", "content": "Hi"}]] * 2, ["Hello!", "Go away."], 64)
    assert rewards.shape == (2,) and torch.isfinite(rewards).all()


def test_lora_adapters_learn_and_are_merged_into_a_plain_saved_model(tmp_path):
    data = synthetic_rankings(tmp_path / "rankings.jsonl", judgements=400)
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    model = tiny_reward_model(tokenizer, hidden=64)
    config = RewardConfig(
        epochs=3, learning_rate=5e-3, prompts_per_batch=16, eval_fraction=0.2, max_length=64, lora=True, lora_rank=8
    )
    result = train_reward_model(config, data, tmp_path / "out", model=model, tokenizer=tokenizer)
    assert result.metrics["eval_accuracy"] >= 0.8
    saved = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert not any("lora" in name for name, _ in saved.named_parameters())


def test_an_export_that_leaves_nothing_to_train_on_is_refused_with_the_reason(tmp_path):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "q1", "chosen": "good", "rejected": "bad"}) + "\n")
    tokenizer = tiny_tokenizer(WORDS + PROMPTS)
    with pytest.raises(DataError, match="No prompts are left to train on: 1 held out of 1"):
        train_reward_model(
            RewardConfig(eval_fraction=0.6), data, tmp_path / "out", model=tiny_reward_model(tokenizer),
            tokenizer=tokenizer,
        )  # fmt: skip


def test_a_records_weight_multiplies_its_sources_and_a_bad_one_is_refused_with_its_record(tmp_path):
    path = tmp_path / "weighted.jsonl"
    good = {"prompt": "q0", "responses": ["w1", "w2"], "ranking": [[0], [1]]}
    path.write_text(json.dumps({**good, "weight": 0.5, "source": "ai"}) + "\n" + json.dumps(good) + "\n")
    examples = read_rankings(path).examples
    assert [example.weight for example in examples] == [0.5, 1.0]
    pairs = pairs_of(examples, use_margin=False, source_weights={"human": 1.0, "ai": 3.0})
    assert pairs.weight.tolist() == [1.5, 1.0]
    for bad in (-1, "heavy", True, float("inf")):
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "weight": bad}) + "\n")
        with pytest.raises(DataError, match="record 2: weight must be a number of at least 0"):
            read_rankings(path)
