"""Conversations stay conversations: a multi-turn prompt reaches the policy turn by turn through its chat
template (with the assistant's turn opened) when the tokenizer has one, and as plain text otherwise; in PPO's
rollouts, in response generation and in critique and revision."""

import json

import pytest
import torch

from training.cai import PrincipleText, critique_text, revision_text
from training.config import PPOConfig
from training.data import read_prompts, read_prompts_with_ids
from training.generate import generate_responses
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer
from training.sampling import sample
from training.text import policy_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} [EOS] {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
WORDS = ["<user>", "<assistant>", "<system>", "hi", "hello", "again", "and", "now", "?", "critique", "it", "fix"]
CONVERSATION = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "and now ?"},
]


def tokenizer_with_template():
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_the_prompts_export_is_read_turn_by_turn_even_where_its_text_is_flattened(tmp_path):
    path = tmp_path / "prompts.jsonl"
    flattened = "User: hi\n\nAssistant: hello\n\nUser: and now ?"
    path.write_text(json.dumps({"prompt_id": 7, "prompt": flattened, "messages": CONVERSATION}) + "\n")
    assert read_prompts_with_ids(path) == [(7, CONVERSATION)]
    assert read_prompts(path) == [CONVERSATION]


def test_the_policy_prompt_is_the_chat_template_with_the_assistants_turn_opened_or_plain_text():
    assert policy_prompt(tokenizer_with_template(), CONVERSATION) == (
        "<user> hi [EOS] <assistant> hello [EOS] <user> and now ? [EOS] <assistant> "
    )
    plain = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    assert policy_prompt(plain, CONVERSATION) == "User: hi\n\nAssistant: hello\n\nUser: and now ?\n\n"


@pytest.mark.parametrize("templated", [True, False])
def test_ppo_rollouts_continue_the_conversation_as_the_template_lays_it_out(templated):
    tokenizer = tokenizer_with_template() if templated else prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    policy = tiny_causal_lm(tokenizer)
    torch.manual_seed(0)
    rollout = sample(policy, tokenizer, [CONVERSATION, CONVERSATION[:1]], PPOConfig(max_new_tokens=3), "cpu")
    context = rollout.sequences[:, : rollout.context]
    for row, mask, messages in zip(context, rollout.attention_mask, [CONVERSATION, CONVERSATION[:1]], strict=True):
        shown = tokenizer.decode(row[mask[: rollout.context].bool()])
        expected = tokenizer.decode(
            tokenizer(policy_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        )
        assert shown == expected
    if templated:
        assert tokenizer.decode(context[0]).count("<user>") == 2  # two user turns, not one holding both


def test_generation_answers_each_prompt_of_the_export_as_a_conversation(tmp_path):
    tokenizer = tokenizer_with_template()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt_id": 3, "prompt": "flattened text", "messages": CONVERSATION}) + "\n")
    seen = []
    original = tokenizer.apply_chat_template

    def recording(messages, **options):
        seen.append(messages)
        return original(messages, **options)

    tokenizer.apply_chat_template = recording
    summary = generate_responses(
        "unused", prompts, tmp_path / "out", samples=2, max_new_tokens=3, model=tiny_causal_lm(tokenizer),
        tokenizer=tokenizer,
    )  # fmt: skip
    assert summary["responses"] == 2 and seen == [CONVERSATION, CONVERSATION]


def test_critique_and_revision_are_turns_of_the_conversation_for_a_chat_model():
    tokenizer = tokenizer_with_template()
    principle = PrincipleText(id=1, name="p", critique_request="critique it", revision_request="fix it")
    assert critique_text(tokenizer, CONVERSATION, "hello again", principle) == (
        "<user> hi [EOS] <assistant> hello [EOS] <user> and now ? [EOS] <assistant> hello again [EOS] "
        "<user> critique it [EOS] <assistant> "
    )
    assert revision_text(tokenizer, CONVERSATION, "hello again", principle, "it", few_shot="hi hello") == (
        "<system> Examples of critiques and revisions:\n\nhi hello [EOS] "
        "<user> hi [EOS] <assistant> hello [EOS] <user> and now ? [EOS] <assistant> hello again [EOS] "
        "<user> critique it [EOS] <assistant> it [EOS] <user> fix it [EOS] <assistant> "
    )
    plain = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    assert critique_text(plain, CONVERSATION[:1], "hello", principle).endswith(
        "CritiqueRequest: critique it\n\nCritique:"
    )
