"""PPO on tiny random-init models with a known reward: it learns, the KL penalty holds it back, responses
without EOS are penalised, a resumed run ends where an uninterrupted one does, and a reward model with
another tokenizer works. No Django here."""

import json
from pathlib import Path

import pytest
import torch

from training.config import PPOConfig
from training.models import (
    prepare_policy_tokenizer,
    prepare_tokenizer,
    tiny_causal_lm,
    tiny_reward_model,
    tiny_tokenizer,
)
from training.ppo import train_ppo
from training.reward import score
from training.rl import gae
from training.sampling import sample

WORDS = [f"w{i}" for i in range(16)] + ["good", "q"] + [f"p{i}" for i in range(10)]


def good_count(prompts, texts) -> torch.Tensor:
    """The known reward: a quarter point per "good" in the response."""
    return torch.tensor([text.split().count("good") / 4.0 for text in texts])


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"q p{i}"}) for i in range(10)))
    return path


def tiny_policy():
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    return tiny_causal_lm(tokenizer, layers=2, hidden=32), tokenizer


def config(**fields) -> PPOConfig:
    defaults = dict(
        steps=40, batch_size=16, mini_batch_size=8, ppo_epochs=4, learning_rate=3e-3, max_new_tokens=8,
        temperature=1.0, kl_coef=0.1, missing_eos_penalty=0.0,
    )  # fmt: skip
    return PPOConfig(**{**defaults, **fields})


def run(prompts_file, out, reward=good_count, **fields):
    policy, tokenizer = tiny_policy()
    return train_ppo(
        config(**fields), prompts_file, out, policy=policy, tokenizer=tokenizer, reward_function=reward, resume=True
    )


def mean(history, key, steps) -> float:
    return sum(entry[key] for entry in steps(history)) / len(steps(history))


def test_the_score_rises_within_a_few_dozen_steps_while_the_kl_stays_bounded(prompts_file, tmp_path):
    history = run(prompts_file, tmp_path / "out").history
    first, last = mean(history, "score", lambda h: h[:5]), mean(history, "score", lambda h: h[-5:])
    assert last > first + 0.3, (first, last)
    assert max(entry["kl"] for entry in history) < 10.0
    assert history[-1]["entropy"] < history[0]["entropy"]
    # The engine's log-probabilities of what it drew are the policy's, as PPO computes them again.
    assert max(entry["rollout_logprob_gap"] for entry in history) < 1e-4


def test_a_huge_beta_keeps_the_kl_near_zero_and_the_score_where_it_was(prompts_file, tmp_path):
    history = run(prompts_file, tmp_path / "out", kl_coef=50.0).history
    first, last = mean(history, "score", lambda h: h[:5]), mean(history, "score", lambda h: h[-5:])
    assert abs(last - first) < 0.1, (first, last)
    assert max(entry["kl"] for entry in history[-10:]) < 0.5


@pytest.mark.parametrize("static_cache", [False, True], ids=["dynamic cache", "static cache"])
def test_the_kl_is_exactly_zero_at_the_first_step(prompts_file, tmp_path, static_cache):
    history = run(prompts_file, tmp_path / "out", steps=2, static_cache=static_cache).history
    assert history[0]["kl"] == 0.0 and history[1]["kl"] != 0.0
    assert max(entry["rollout_logprob_gap"] for entry in history) < 1e-4


@pytest.mark.parametrize(("mode", "cut_off_score"), [("subtract", 2.0 - 3.0), ("replace", -3.0)])
def test_a_response_without_eos_loses_the_penalty_from_its_score_or_in_its_place(
    prompts_file, tmp_path, mode, cut_off_score
):
    history = run(
        prompts_file, tmp_path / "out", steps=3, batch_size=64, max_new_tokens=3,
        reward=lambda prompts, texts: torch.full((len(texts),), 2.0), missing_eos_penalty=3.0, missing_eos=mode,
    ).history  # fmt: skip
    for entry in history:
        assert 0.0 < entry["eos_rate"] < 1.0  # both kinds in every batch
        assert entry["score"] == 2.0
        expected = entry["eos_rate"] * 2.0 + (1 - entry["eos_rate"]) * cut_off_score
        assert entry["score_with_penalty"] == pytest.approx(expected)


def test_the_missing_eos_settings_are_checked():
    with pytest.raises(ValueError, match="'subtract' or 'replace'"):
        PPOConfig(missing_eos="ignore")
    with pytest.raises(ValueError, match="0 or more"):
        PPOConfig(missing_eos_penalty=-1.0)


def test_a_sampled_response_is_cut_after_its_first_eos(prompts_file):
    policy, tokenizer = tiny_policy()
    torch.manual_seed(0)
    prompts = [[{"role": "user", "content": f"q p{i}"}] for i in range(32)]
    rollout = sample(policy, tokenizer, prompts, config(max_new_tokens=6), torch.device("cpu"))
    response = rollout.sequences[:, rollout.context :]
    assert response.shape[0] == 32 and response.shape[1] <= 6
    for row, mask, has_eos in zip(response, rollout.mask, rollout.has_eos, strict=True):
        length = int(mask.sum())
        assert bool(has_eos) == (tokenizer.eos_token_id in row[:length].tolist())
        if has_eos:
            assert row[length - 1] == tokenizer.eos_token_id  # the EOS is the last real token
            assert row[: length - 1].tolist().count(tokenizer.eos_token_id) == 0
            assert set(row[length:].tolist()) <= {tokenizer.pad_token_id}
        else:
            assert length == response.shape[1] == 6
    assert rollout.has_eos.any() and not rollout.has_eos.all()


def test_sampling_with_the_kv_cache_follows_the_full_forward_pass():
    """At a temperature near 0 sampling is greedy: the cached loop (left-padded prompts of several lengths)
    must pick what generate() picks."""
    from training.sampling import generate

    policy, tokenizer = tiny_policy()
    tokenizer.padding_side = "left"
    query = tokenizer([f"q p{i}" + " w1" * (i % 3) for i in range(6)], padding=True, return_tensors="pt")
    ours = generate(policy, query["input_ids"], query["attention_mask"], 8, 1e-4, eos=-1, pad=tokenizer.pad_token_id)
    theirs = policy.generate(**query, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(ours, theirs[:, query["input_ids"].shape[1] :])


def test_draw_samples_each_row_from_its_own_distribution():
    from training.sampling import draw

    torch.manual_seed(0)
    first = torch.tensor([0.5, 0.2, 0.0, 0.3])
    second = torch.tensor([0.0, 0.0, 1.0, 0.0])
    tokens = draw(torch.stack([first, second]).repeat(20_000, 1)).view(20_000, 2)
    frequencies = torch.bincount(tokens[:, 0], minlength=4) / 20_000
    assert torch.allclose(frequencies, first, atol=0.01)
    assert frequencies[2] == 0  # a token of probability 0 is never drawn
    assert (tokens[:, 1] == 2).all()


def test_gae_with_lambda_one_and_gamma_one_gives_the_reward_to_go_minus_the_value():
    rewards = torch.tensor([[0.0, -0.1, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.3, 0.0]])
    advantages, returns = gae(rewards, values, gamma=1.0, lam=1.0)
    assert torch.allclose(returns, torch.tensor([[0.9, 0.9, 1.0, 0.0]]))
    assert torch.allclose(advantages, returns - values)


@pytest.fixture
def prompts_with_ids(tmp_path) -> Path:
    """A prompts export (with ids): PPO holds a quarter of it back for its over-optimisation probes."""
    path = tmp_path / "prompts-with-ids.jsonl"
    path.write_text("\n".join(json.dumps({"prompt_id": 100 + i, "prompt": f"q p{i % 10} w{i}"}) for i in range(16)))
    return path


@pytest.mark.parametrize("with_probes", [False, True], ids=["no probes", "probes"])
def test_four_steps_in_one_go_and_two_plus_resume_plus_two_end_with_the_same_weights(
    prompts_file, prompts_with_ids, tmp_path, with_probes
):
    prompts_file = prompts_with_ids if with_probes else prompts_file
    straight = run(prompts_file, tmp_path / "straight", steps=4)

    class Crash(Exception):
        pass

    def crash_after_two(metrics):
        if metrics.get("step") == 2:
            raise Crash

    policy, tokenizer = tiny_policy()
    with pytest.raises(Crash):
        train_ppo(
            config(steps=4, save_every=2), prompts_file, tmp_path / "resumed", policy=policy, tokenizer=tokenizer,
            reward_function=good_count, on_metrics=crash_after_two,
        )  # fmt: skip
    assert (tmp_path / "resumed" / "checkpoints" / "step-2" / "state.pt").exists()
    resumed = run(prompts_file, tmp_path / "resumed", steps=4, save_every=2)

    from transformers import AutoModelForCausalLM

    first = AutoModelForCausalLM.from_pretrained(straight.model_dir).state_dict()
    second = AutoModelForCausalLM.from_pretrained(resumed.model_dir).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.allclose(first[name], second[name], atol=1e-6), name
    assert [entry["score"] for entry in resumed.history] == [entry["score"] for entry in straight.history]
    probes = [(tmp_path / name / "probes.jsonl") for name in ("straight", "resumed")]
    if with_probes:  # the resumed run kept the probe answers up to its checkpoint and wrote the rest once
        assert probes[0].read_text() == probes[1].read_text()
        assert [point["step"] for point in resumed.metrics["probes"]] == [0, 1, 3, 4]
    else:
        assert not probes[0].exists() and straight.metrics["probes"] == []


def test_the_probes_are_held_back_from_training_and_show_the_policy_learning(prompts_with_ids, tmp_path):
    """A quarter of the prompts (4 of 16) are answered at the start and at three points; they never reach a
    training batch. With a known reward, the probes' score rises with their KL from zero at the start."""
    calls = []

    def recorded(prompts, texts):
        calls.append([prompt[-1]["content"] for prompt in prompts])
        return good_count(prompts, texts)

    result = run(prompts_with_ids, tmp_path / "out", reward=recorded, steps=30)
    lines = [json.loads(line) for line in (tmp_path / "out" / "probes.jsonl").read_text().splitlines()]
    probe_ids = {line["prompt_id"] for line in lines}
    assert len(probe_ids) == 4 and {line["step"] for line in lines} == {0, 10, 20, 30}
    records = {100 + i: f"q p{i % 10} w{i}" for i in range(16)}
    probe_texts = {records[prompt_id] for prompt_id in probe_ids}
    training_calls = [call for call in calls if len(call) == 16]
    assert training_calls and not any(set(call) & probe_texts for call in training_calls)
    points = result.metrics["probes"]
    assert points[0]["kl"] == pytest.approx(0.0, abs=1e-5) and all(point["answers"] == 4 for point in points)
    assert points[-1]["score"] > points[0]["score"] and points[-1]["kl"] > 0.1


@pytest.mark.parametrize("shared", [True, False], ids=["same tokenizer", "another tokenizer"])
def test_a_reward_model_is_read_through_its_own_tokenizer(prompts_file, tmp_path, shared):
    policy, tokenizer = tiny_policy()
    if shared:
        reward_tokenizer = tokenizer
    else:  # other words, other ids: the response is decoded and encoded again
        reward_tokenizer = prepare_tokenizer(tiny_tokenizer(list(reversed(WORDS)) + ["extra", "words"]))
    reward_model = tiny_reward_model(reward_tokenizer, seed=3)
    result = train_ppo(
        config(steps=2, max_new_tokens=6), prompts_file, tmp_path / "out", policy=policy, tokenizer=tokenizer,
        reward_model=reward_model, reward_tokenizer=reward_tokenizer,
    )  # fmt: skip
    assert result.metrics["value_model_from"] == ("reward model" if shared else "policy")
    samples = result.history[-1]["samples"]
    prompts = [sample_["prompt"] for sample_ in samples]
    expected = score(reward_model, reward_tokenizer, prompts, [sample_["response"] for sample_ in samples], 512)
    assert [sample_["score"] for sample_ in samples] == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_adaptive_controller_raises_beta_above_the_target_kl_and_lowers_it_below():
    from training.rl import AdaptiveKLController

    controller = AdaptiveKLController(beta=0.1, target=6.0, horizon=1000)
    controller.update(kl=12.0, episodes=100)  # twice the target: the error is clipped at +20%
    assert controller.beta == pytest.approx(0.1 * (1 + 0.2 * 100 / 1000))
    controller.beta = 0.1
    controller.update(kl=5.4, episodes=100)  # 10% under
    assert controller.beta == pytest.approx(0.1 * (1 - 0.1 * 100 / 1000))


def test_ppo_ptx_lowers_the_language_model_loss_on_demonstrations(prompts_file, tmp_path):
    demonstrations = tmp_path / "sft.jsonl"
    demonstrations.write_text(
        "\n".join(json.dumps({"prompt": f"q p{i}", "completion": f"w{i} w{i} good"}) for i in range(10))
    )
    policy, tokenizer = tiny_policy()
    history = train_ppo(
        config(steps=15, ptx_coef=1.0, ptx_batch_size=8), prompts_file, tmp_path / "out", ptx_path=demonstrations,
        policy=policy, tokenizer=tokenizer, reward_function=good_count,
    ).history  # fmt: skip
    first, last = mean(history, "ptx_loss", lambda h: h[:3]), mean(history, "ptx_loss", lambda h: h[-3:])
    assert last < first * 0.7, (first, last)


def test_with_lora_the_reference_is_the_policy_with_its_adapters_off(prompts_file, tmp_path):
    from transformers import AutoModelForCausalLM

    result = run(prompts_file, tmp_path / "out", steps=6, lora=True, lora_rank=4, lora_alpha=8, learning_rate=1e-2)
    assert result.history[0]["kl"] == 0.0  # adapters start at zero: policy and reference agree
    assert result.history[-1]["kl"] > 0.0  # and part ways as the adapters learn
    saved = AutoModelForCausalLM.from_pretrained(result.model_dir)  # merged: a plain model
    assert not any("lora" in name for name in saved.state_dict())


def test_the_command_line_takes_the_whole_batch_as_one_minibatch_unless_told(monkeypatch, tmp_path):
    import training.ppo
    from training import cli

    seen = []

    def fake_train(config, *args, **kwargs):
        seen.append(config)
        raise RuntimeError("stop here")

    monkeypatch.setattr(training.ppo, "train_ppo", fake_train)
    common = ["ppo", "--prompts", "p.jsonl", "--reward-model", "rm", "--out", str(tmp_path / "out")]
    cli.main([*common, "--batch-size", "4"])
    cli.main([*common, "--batch-size", "8", "--mini-batch-size", "2"])
    assert [(c.batch_size, c.mini_batch_size) for c in seen] == [(4, 4), (8, 2)]
    assert cli.main([*common, "--batch-size", "6", "--mini-batch-size", "4"]) == 2  # a clear refusal


@pytest.mark.parametrize(("setting", "expected"), [(None, True), (False, False)])
def test_on_a_cpu_activations_are_recomputed_unless_told_not_to(prompts_file, tmp_path, setting, expected):
    policy, tokenizer = tiny_policy()
    train_ppo(
        config(steps=1, gradient_checkpointing=setting), prompts_file, tmp_path / "out", policy=policy,
        tokenizer=tokenizer, reward_function=good_count,
    )  # fmt: skip
    assert policy.is_activation_checkpointing is expected
    assert not policy.training  # back in eval mode after the update: sampling keeps its KV cache
