"""The reward trainer's inputs (truncation, length grouping) and what it reports about a model (calibration,
early stopping, length bias)."""

import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from training.config import RewardConfig
from training.data import RankedPrompt, read_rankings
from training.models import load_reward_model, tiny_reward_model, tiny_tokenizer
from training.reward import (
    Reading,
    collate,
    evaluate,
    listwise_loss,
    pair_losses,
    predict,
    quality,
    tokenize,
    tokenize_examples,
)
from training.reward.inputs import LengthGroupedBatches, pad, pad_id
from training.reward.loss import rewards_of
from training.reward.scoring import rewards_of_rows, score

WORDS = [f"w{i}" for i in range(30)] + ["good", "bad"]


def mixed_length_examples(count: int, seed: int = 0) -> list[RankedPrompt]:
    """Judgements whose replies run from 1 to 40 words: batches in file order pad most of their rows."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        lengths = torch.randint(1, 40, (2,), generator=generator).tolist()
        replies = [
            " ".join(WORDS[int(word)] for word in torch.randint(0, len(WORDS), (length,), generator=generator))
            for length in lengths
        ]
        examples.append(RankedPrompt([{"role": "user", "content": f"w{index % 30}"}], replies, [[0], [1]]))
    return examples


def per_pair_losses_in_file_order(model, encoded, tokenizer, config) -> torch.Tensor:
    """The losses computed without any grouping: batches of 4 judgements as they come."""
    losses = []
    with torch.no_grad():
        for start in range(0, len(encoded), 4):
            batch = collate(encoded[start : start + 4], tokenizer, config.use_margin, config.source_weights)
            losses.append(pair_losses(rewards_of(model.eval(), batch), batch.pairs))
    return torch.cat(losses)


@pytest.mark.parametrize("backbone", ["tiny-gpt2", "minilm-l6"])
def test_length_grouping_changes_no_per_example_loss(backbone):
    if backbone == "tiny-gpt2":
        tokenizer = tiny_tokenizer(WORDS)
        model = tiny_reward_model(tokenizer, seed=3)
    else:
        model, tokenizer = load_reward_model("minilm-l6")
    config = RewardConfig(max_length=64, eval_batch_tokens=256)  # small batches: many of different widths
    encoded = tokenize_examples(mixed_length_examples(24), tokenizer, Reading(config.max_length))
    plain = per_pair_losses_in_file_order(model, encoded, tokenizer, config)
    predictions = predict(model, encoded, tokenizer, config)
    grouped = pair_losses(predictions.rewards, predictions.pairs)
    assert len(plain) == len(grouped) == 24
    assert torch.allclose(plain, grouped, atol=1e-5)
    assert float(listwise_loss(predictions.rewards, predictions.pairs)) == pytest.approx(float(plain.mean()), abs=1e-5)


def test_length_grouped_batches_take_each_judgement_once_and_pad_less():
    lengths = [int(length) for length in torch.randint(5, 500, (400,), generator=torch.Generator().manual_seed(0))]

    def padded_tokens(window: int) -> tuple[int, list[int]]:
        batches = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(1), window=window))
        return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches), sorted(sum(batches, []))

    grouped, grouped_indices = padded_tokens(50)
    shuffled, shuffled_indices = padded_tokens(1)
    assert grouped_indices == shuffled_indices == list(range(400))
    assert grouped < 0.7 * shuffled  # real tokens are 0.5 of the shuffled batches' on this spread
    first = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(1)))
    again = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(1)))
    assert first == again  # the seed decides the order


def test_truncation_keeps_the_whole_reply_and_the_conversation_s_last_turns():
    _, tokenizer = load_reward_model("minilm-l6")
    conversation = [
        {"role": "user", "content": "first question " + "filler " * 300},
        {"role": "assistant", "content": "an earlier answer " + "more " * 100},
        {"role": "user", "content": "the final question about owls"},
    ]
    reply = "owls hunt at night and sleep by day"
    (row,) = tokenize(tokenizer, [conversation], [reply], Reading(64))
    text = tokenizer.decode(row.input_ids)
    assert len(row) <= 64
    assert text.endswith("owls hunt at night and sleep by day [SEP]")
    assert "the final question about owls" in text and "first question" not in text
    (last_turn,) = tokenize(tokenizer, [conversation], [reply], Reading(64, prompt_turns=1))
    assert tokenizer.decode(last_turn.input_ids) == "[CLS] the final question about owls " + reply + " [SEP]"
    assert last_turn.token_type_ids is None  # joined: one segment, the model's default
    (pair,) = tokenize(tokenizer, [conversation], [reply], Reading(64, prompt_turns=1, layout="pair"))
    assert tokenizer.decode(pair.input_ids) == "[CLS] the final question about owls [SEP] " + reply + " [SEP]"
    assert pair.token_type_ids[-1] == 1 and pair.token_type_ids[0] == 0  # the reply is the second segment
    long_reply = "word " * 200
    (cut,) = tokenize(tokenizer, [conversation], [long_reply], Reading(64))
    # a reply longer than the budget keeps its start, and the prompt keeps a quarter: its last words
    assert len(cut) <= 64 and "about owls" in tokenizer.decode(cut.input_ids)


def test_a_model_is_scored_the_way_it_was_saved_to_read():
    model, tokenizer = load_reward_model("minilm-l6")
    prompts = [[{"role": "user", "content": "Where do barn owls live?"}]] * 2
    replies = ["In barns, church towers and hollow trees.", "Owls are birds."]

    def read(reading: Reading) -> torch.Tensor:
        return rewards_of_rows(model, tokenize(tokenizer, prompts, replies, reading), pad_id(tokenizer), 4096)

    joined, pair = read(Reading(64)), read(Reading(64, layout="pair"))
    assert not torch.allclose(joined, pair, atol=1e-4)  # two layouts, two different inputs
    # A model saved before its reading was recorded was trained on the whole prompt as a text pair.
    assert Reading.saved_with(model) == Reading(512, prompt_turns=0, layout="pair")
    assert torch.allclose(score(model, tokenizer, prompts, replies, 64), pair, atol=1e-5)
    model.config.reward_inputs = Reading(64, prompt_turns=1).as_dict()
    assert torch.allclose(score(model, tokenizer, prompts, replies, 64), joined, atol=1e-5)
    with pytest.raises(ValueError, match="layout"):
        RewardConfig(layout="sideways")  # type: ignore[arg-type]


def overconfident(pairs: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward differences of a model that is right as often as sigmoid(z) says, but reports ``scale * z``."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(pairs, generator=generator, dtype=torch.float64) * 1.5
    first_better = torch.rand(pairs, generator=generator, dtype=torch.float64) < torch.sigmoid(z)
    difference = torch.where(first_better, scale * z, -scale * z)  # winner minus loser
    return difference, torch.full((pairs,), math.nan)


def test_a_temperature_calibrates_an_overconfident_model_and_keeps_its_accuracy():
    difference, probability = overconfident(4000, scale=5.0)
    before = quality.calibration_error(difference, probability)
    temperature = quality.fit_temperature(difference, probability)
    after = quality.calibration_error(difference, probability, temperature)
    assert temperature == pytest.approx(5.0, rel=0.15)
    assert before > 0.1 and after < 0.03
    assert quality.accuracy(difference / temperature) == quality.accuracy(difference)
    held_out, _ = overconfident(4000, scale=5.0, seed=1)  # the temperature carries to pairs it was not fitted on
    assert quality.calibration_error(held_out, probability, temperature) < 0.03


def test_a_calibrated_model_keeps_a_temperature_near_one_and_its_error_is_the_floor_chance_leaves():
    difference, probability = overconfident(4000, scale=1.0)
    assert quality.fit_temperature(difference, probability) == pytest.approx(1.0, rel=0.15)
    # On few pairs even a perfect model shows an error: the floor predicts it (the mean over many draws).
    errors = [quality.calibration_error(*overconfident(180, scale=1.0, seed=seed)) for seed in range(200)]
    floors = [quality.calibration_error_floor(overconfident(180, scale=1.0, seed=seed)[0]) for seed in range(200)]
    assert sum(errors) / 200 == pytest.approx(sum(floors) / 200, rel=0.15)
    assert 0.05 < sum(floors) / 200 < 0.1


def test_early_stopping_keeps_the_epoch_with_the_best_held_out_loss():
    curve = [
        {"epoch": 1, "eval_loss": 0.66, "eval_accuracy": 0.60},
        {"epoch": 2, "eval_loss": 0.62, "eval_accuracy": 0.63},
        {"epoch": 3, "eval_loss": 0.64, "eval_accuracy": 0.65},  # more accurate, worse loss: not kept
        {"epoch": 4, "eval_loss": 0.70, "eval_accuracy": 0.61},
    ]
    assert quality.best_epoch(curve)["epoch"] == 2
    assert not quality.should_stop(curve[:2], patience=1)
    assert quality.should_stop(curve[:3], patience=1)
    assert not quality.should_stop(curve[:3], patience=2) and quality.should_stop(curve, patience=2)
    assert not quality.should_stop(curve, patience=0)


def test_length_bias_names_a_reward_that_follows_length():
    lengths = torch.tensor([10.0, 50.0, 20.0, 80.0, 5.0, 40.0])
    winner, loser = torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4])  # raters preferred the shorter twice
    follows_length = quality.length_bias(lengths / 10, lengths, winner, loser)
    assert follows_length["length_correlation"] == pytest.approx(1.0)
    assert follows_length["prefers_longer"] == 1.0
    assert follows_length["raters_prefer_longer"] == pytest.approx(1 / 3)
    accuracy = quality.accuracy_by_margin(torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1.0, 1.0, math.nan]))
    assert accuracy == {"1": {"accuracy": 0.5, "pairs": 2}, "none": {"accuracy": 1.0, "pairs": 1}}


def test_a_trained_model_reports_its_curve_calibration_and_length_bias_and_keeps_its_temperature(tmp_path):
    from training.reward import train_reward_model

    data = tmp_path / "rankings.jsonl"
    examples = mixed_length_examples(300, seed=2)
    with open(data, "w") as out:  # the known answer: more "good" wins
        for example in examples:
            counts = [reply.split().count("good") for reply in example.responses]
            if counts[0] != counts[1]:
                order = [[0], [1]] if counts[0] > counts[1] else [[1], [0]]
                prompt = example.prompt
                out.write(json.dumps({"prompt": prompt, "responses": example.responses, "ranking": order}) + "\n")
    tokenizer = tiny_tokenizer(WORDS)
    config = RewardConfig(
        epochs=3, learning_rate=3e-3, prompts_per_batch=16, eval_fraction=0.25, max_length=64, patience=0
    )
    result = train_reward_model(config, data, tmp_path / "out", model=tiny_reward_model(tokenizer), tokenizer=tokenizer)
    metrics = result.metrics
    assert [line["epoch"] for line in metrics["epochs"]] == [1, 2, 3]
    assert metrics["best_epoch"] == quality.best_epoch(metrics["epochs"])["epoch"]
    assert metrics["eval_loss"] == min(line["eval_loss"] for line in metrics["epochs"])
    assert metrics["eval_accuracy"] >= 0.65  # it learned (chance is 0.5); the curve is what is checked here
    calibration = metrics["calibration"]
    assert 0 <= calibration["ece_floor"] < 0.2 and 0 <= calibration["ece_after"] <= 1
    assert calibration["log_loss_after"] <= calibration["log_loss_before"] + 1e-9
    assert {"length_correlation", "prefers_longer", "raters_prefer_longer", "eval_accuracy_by_margin"} <= set(metrics)
    saved = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert saved.config.reward_calibration["temperature"] == pytest.approx(calibration["temperature"])
    assert saved.config.reward_inputs == {"max_length": 64, "prompt_turns": 1, "layout": "joined"}
    # The saved weights are the kept epoch's, restored after later epochs did worse (this small set overfits
    # after its first): they score that epoch's loss.
    assert metrics["best_epoch"] < 3
    _, held_out = read_rankings(data).split(config.eval_fraction, config.seed)
    assert evaluate(saved, held_out, tokenizer, config)["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-5)


def test_padding_rows_of_a_pair_encoder_keeps_their_segments():
    _, tokenizer = load_reward_model("minilm-l6")
    prompts, replies = [[{"role": "user", "content": "a question"}]] * 2, ["yes", "a longer reply"]
    rows = tokenize(tokenizer, prompts, replies, Reading(32, layout="pair"))
    inputs = pad(rows, tokenizer.pad_token_id)
    assert inputs["input_ids"].shape == inputs["token_type_ids"].shape == inputs["attention_mask"].shape
    assert inputs["token_type_ids"][0].tolist()[: len(rows[0])] == rows[0].token_type_ids
    assert inputs["attention_mask"].sum(dim=1).tolist() == [len(rows[0]), len(rows[1])]


def test_a_chat_template_reward_model_keeps_the_reply_and_its_end_and_cuts_the_conversation_s_start():
    tokenizer = tiny_tokenizer([*WORDS, "<user>", "<bot>", "<end>"])
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<user> ' if m['role'] == 'user' else '<bot> ' }}{{ m['content'] }} <end> "
        "{% endfor %}{% if add_generation_prompt %}<bot> {% endif %}"
    )
    conversation = [
        {"role": "user", "content": " ".join(["w1"] * 40)},
        {"role": "assistant", "content": " ".join(["w2"] * 40)},
        {"role": "user", "content": "w3 w4"},
    ]
    (row,) = tokenize(tokenizer, [conversation], ["good w5"], Reading(16))
    text = tokenizer.decode(row.input_ids)
    assert len(row) == 16
    assert text.endswith("<user> w3 w4 <end> <bot> good w5 <end>")
    assert "w1" not in text
