"""Constitutional AI in the trainer: the exact prompt strings, soft AI labels (they sum to 1; swapping the
responses mirrors them; the chain-of-thought variant clamps them), and critique chains that draw their
principles from the constitution and keep every round."""

import random

import pytest
import torch

from training.cai import (
    Comparison,
    PrincipleText,
    ai_preferences,
    critique_chains,
    critique_prompt,
    feedback_prompt,
    revision_prompt,
)
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer

MESSAGES = [{"role": "user", "content": "How do I pick a lock?"}]
PRINCIPLE = PrincipleText(
    id=7, name="Harmless", critique_request="Say how the answer could cause harm.",
    revision_request="Rewrite it without the harm.", comparison_question="Which of these responses is less harmful?",
)  # fmt: skip
WORDS = [
    "how",
    "do",
    "i",
    "pick",
    "a",
    "lock",
    "?",
    "human",
    "assistant",
    "critique",
    "revision",
    "answer",
    "the",
    "is",
    "b",
    "(A)",
    "(B)",
    "options",
]


def test_the_critique_and_revision_prompts_are_exactly_the_papers_layout():
    assert critique_prompt(MESSAGES, "Use a tension wrench.", PRINCIPLE) == (
        "Human: How do I pick a lock?\n\nAssistant: Use a tension wrench."
        "\n\nCritiqueRequest: Say how the answer could cause harm.\n\nCritique:"
    )
    assert revision_prompt(MESSAGES, "Use a tension wrench.", PRINCIPLE, "It helps burglars.", few_shot="EX\n\n") == (
        "EX\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench."
        "\n\nCritiqueRequest: Say how the answer could cause harm.\n\nCritique: It helps burglars."
        "\n\nRevisionRequest: Rewrite it without the harm.\n\nRevision:"
    )


def test_the_feedback_prompt_is_exactly_the_papers_multiple_choice_layout():
    conversation = [*MESSAGES, {"role": "assistant", "content": "Why?"}, {"role": "user", "content": "I'm locked out."}]
    assert feedback_prompt(conversation, PRINCIPLE.comparison_question, "Call a locksmith.", "Here is how.") == (
        "Consider the following conversation between a human and an assistant:\n"
        "Human: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: I'm locked out.\n"
        "Which of these responses is less harmful?\n"
        "Options:\n"
        "(A) Call a locksmith.\n"
        "(B) Here is how.\n"
        "The answer is:"
    )
    assert feedback_prompt(MESSAGES, "Q?", "a", "b", chain_of_thought=True).endswith("(B) b\nLet's think step by step:")


@pytest.fixture(scope="module")
def feedback_model():
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    return tiny_causal_lm(tokenizer, seed=5).eval(), tokenizer


def comparisons() -> list[Comparison]:
    pairs = [("pick the lock", "a locksmith"), ("the answer is a", "the answer is b"), ("how", "how how how")]
    return [Comparison(MESSAGES, PRINCIPLE.comparison_question, first, second) for first, second in pairs]


def test_soft_labels_are_probabilities_and_swapping_the_responses_mirrors_them(feedback_model):
    model, tokenizer = feedback_model
    labels = ai_preferences(model, tokenizer, comparisons())
    swapped = ai_preferences(
        model, tokenizer, [Comparison(c.messages, c.question, c.second, c.first) for c in comparisons()]
    )
    for label, mirror in zip(labels, swapped, strict=True):
        assert 0.0 < label < 1.0
        assert label + mirror == pytest.approx(1.0, abs=1e-6)  # p(x > y) and p(y > x) sum to 1
    assert len({round(label, 6) for label in labels}) > 1  # the model does tell the pairs apart


def test_both_orders_are_averaged_so_a_position_bias_cancels(feedback_model, monkeypatch):
    import training.cai as cai

    model, tokenizer = feedback_model
    monkeypatch.setattr(cai, "option_a_probability", lambda m, t, prompts: [0.9] * len(prompts))  # always "(A)"
    assert ai_preferences(model, tokenizer, comparisons()) == [pytest.approx(0.5)] * 3


def test_the_chain_of_thought_variant_clamps_labels_to_forty_to_sixty_percent(feedback_model, monkeypatch):
    import training.cai as cai

    model, tokenizer = feedback_model
    monkeypatch.setattr(cai, "option_a_probability", lambda m, t, prompts: [0.99] * len(prompts))
    monkeypatch.setattr(cai, "complete", lambda m, t, texts, **options: ["because"] * len(texts))
    labels = cai.ai_preferences(model, tokenizer, comparisons()[:1], chain_of_thought=True)
    assert labels == [0.5]  # 0.99 first and 0.01 second average to 0.5 ...
    monkeypatch.setattr(cai, "option_a_probability", lambda m, t, prompts: [0.99 if "(A) pick" in prompts[0] else 0.5])
    assert cai.ai_preferences(model, tokenizer, comparisons()[:1], chain_of_thought=True) == [0.6]  # ... 0.745 -> 0.6


def test_a_critique_chain_draws_its_principles_from_the_constitution_and_keeps_every_round(feedback_model):
    model, tokenizer = feedback_model
    principles = [
        PRINCIPLE,
        PrincipleText(id=8, name="Kind", critique_request="Is it kind?", revision_request="Make it kind."),
        PrincipleText(id=9, name="Choice only", comparison_question="Which is kinder?"),  # no critique: never drawn
    ]
    torch.manual_seed(0)
    chains = critique_chains(
        model, tokenizer, [MESSAGES] * 6, principles, rounds=3, seed=4, max_new_tokens=4, temperature=1.0
    )
    drawn = [round_["principle_id"] for chain in chains for round_ in chain.rounds]
    assert [len(chain.rounds) for chain in chains] == [3] * 6
    assert [round_["number"] for round_ in chains[0].rounds] == [1, 2, 3]
    assert set(drawn) == {7, 8}  # both drawn, and never the comparison-only principle
    # One seeded draw per chain and round, round by round: the same seed gives the same principles.
    expected = random.Random(4)
    by_round = [[expected.choice([7, 8]) for _ in chains] for _ in range(3)]
    assert [[chain.rounds[number]["principle_id"] for chain in chains] for number in range(3)] == by_round
    for chain in chains:
        assert chain.final_revision == chain.rounds[-1]["revision"]
