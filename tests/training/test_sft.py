"""Supervised fine-tuning with trl.SFTTrainer: a tiny model learns demonstrated replies, ends them with EOS,
and is trained on the reply alone."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.config import SFTConfig
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer
from training.sft import sft_records, train_sft
from training.text import policy_prompt

WORDS = [f"w{i}" for i in range(12)] + ["say", "twice"]


def demonstrations(tmp_path):
    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": f"say w{i} twice", "completion": f"w{i} w{i}"} for i in range(12)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_a_tiny_model_learns_the_demonstrated_replies_and_to_stop_after_them(tmp_path):
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    model = tiny_causal_lm(tokenizer, layers=2, hidden=64)
    config = SFTConfig(epochs=60, learning_rate=3e-3, batch_size=12, logging_steps=5, warmup_ratio=0.0)
    seen = []
    result = train_sft(
        config, demonstrations(tmp_path), tmp_path / "out", model=model, tokenizer=tokenizer, on_metrics=seen.append
    )
    assert result.metrics["last_loss"] < result.metrics["first_loss"] / 10
    assert [line["step"] for line in seen if "step" in line and "loss" in line][:3] == [1, 5, 10]

    trained = AutoModelForCausalLM.from_pretrained(result.model_dir)
    saved = AutoTokenizer.from_pretrained(result.model_dir)
    saved.padding_side = "left"
    prompts = [policy_prompt(saved, [{"role": "user", "content": f"say w{i} twice"}]) for i in range(12)]
    inputs = saved(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = {"pad_token_id": saved.pad_token_id, "eos_token_id": saved.eos_token_id}
        output = trained.generate(**inputs, max_new_tokens=5, do_sample=False, **ids)
    replies = saved.batch_decode(output[:, inputs["input_ids"].shape[1] :])
    assert replies == [f"w{i} w{i} [EOS]" for i in range(12)]


def test_the_loss_covers_the_reply_and_its_eos_not_the_prompt(tmp_path):
    import datasets
    import trl

    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tokenizer.padding_side = "right"
    records = sft_records(demonstrations(tmp_path), tokenizer)
    assert records[0] == {"prompt": "say w0 twice\n\n", "completion": "w0 w0"}
    trainer = trl.SFTTrainer(
        model=tiny_causal_lm(tokenizer),
        args=trl.SFTConfig(output_dir=str(tmp_path / "t"), completion_only_loss=True, report_to="none", use_cpu=True),
        train_dataset=datasets.Dataset.from_list(records),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["say", "w0", "twice", "w0", "w0", "[EOS]"]
    labels = trainer.data_collator([row])["labels"][0].tolist()
    assert labels[:3] == [-100, -100, -100]  # the prompt is context, never a target
    assert labels[3:] == row["input_ids"][3:]
