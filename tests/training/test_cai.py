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


def test_continuation_log_probabilities_match_a_plain_forward_pass_per_prompt(feedback_model):
    """Batched, left-padded and with the head on the last positions only: the same numbers as one unpadded
    forward pass per prompt."""
    from training.cai import continuation_logprobs

    model, tokenizer = feedback_model
    prompts = ["the answer is", "how do i pick a lock ? the answer is", "options b the answer is"]
    batched = continuation_logprobs(model, tokenizer, prompts, " (A)")
    for prompt, value in zip(prompts, batched, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = torch.tensor([tokenizer(prompt + " (A)")["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        expected = sum(
            float(logprobs[position - 1, ids[0, position]]) for position in range(len(prompt_ids), ids.shape[1])
        )
        assert value == pytest.approx(expected, abs=1e-4)


def test_option_probabilities_from_the_shared_prefix_equal_scoring_each_option_whole(feedback_model):
    from training.cai import continuation_logprobs, option_a_probability

    model, tokenizer = feedback_model
    prompts = [feedback_prompt(MESSAGES, PRINCIPLE.comparison_question, c.first, c.second) for c in comparisons()]
    fast = option_a_probability(model, tokenizer, prompts)
    a = continuation_logprobs(model, tokenizer, prompts, " (A)")
    b = continuation_logprobs(model, tokenizer, prompts, " (B)")
    slow = [float(torch.softmax(torch.tensor([x, y]), dim=0)[0]) for x, y in zip(a, b, strict=True)]
    assert fast == pytest.approx(slow, abs=1e-5)


def test_options_of_several_tokens_are_scored_through_the_cache_like_whole():
    """With a tokenizer that splits "(A)" into "(", "A", ")", each option's later tokens are read through the
    shared KV cache; the result must equal scoring each option over the whole prompt."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from training.cai import continuation_logprobs, option_a_probability

    words = ["[PAD]", "[UNK]", "[EOS]", "(", ")", "A", "B", *WORDS]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    assert tokenizer.tokenize(" (A)") == ["(", "A", ")"]
    model = tiny_causal_lm(tokenizer, seed=6).eval()
    prompts = ["how do i pick a lock ? the answer is :", "the answer is :"]
    fast = option_a_probability(model, tokenizer, prompts)
    a = continuation_logprobs(model, tokenizer, prompts, " (A)")
    b = continuation_logprobs(model, tokenizer, prompts, " (B)")
    slow = [float(torch.softmax(torch.tensor([x, y]), dim=0)[0]) for x, y in zip(a, b, strict=True)]
    assert fast == pytest.approx(slow, abs=1e-5)
