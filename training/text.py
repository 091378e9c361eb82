"""How a prompt and a reply are laid out for a causal language model, in one place: SFT trains on this
layout, PPO samples from it, and the reward model reads the same (``training.reward.tokenize``)."""

from typing import cast

from transformers import PreTrainedTokenizerBase


def prompt_text(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in messages)


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def policy_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """What the policy continues: the chat template with the assistant's turn opened, or the prompt and a
    blank line."""
    if uses_chat_template(tokenizer):
        return cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"{prompt_text(messages)}\n\n"
