"""Constitutional AI (Bai et al. 2022, arXiv 2212.08073): critique and revision (SL-CAI) and AI preference
labels (RLAIF), driven by the principles of a constitution.

- **Critique and revision**: the model answers a prompt; then, for ``rounds`` rounds, a principle is drawn at
  random, the model criticises its last answer by the principle's critique request and rewrites it by its
  revision request. Every round is kept.
- **AI feedback**: the feedback model reads the paper's multiple-choice prompt (the conversation, the
  principle's question, options (A) and (B), "The answer is:"). The probabilities of " (A)" and " (B)" are
  normalised into a soft label. Both orders are scored and averaged, which cancels position bias and makes
  swapping the two responses mirror the label exactly. The chain-of-thought variant lets the model reason
  first and clamps its labels to 0.4..0.6, as the paper does.
"""

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from training.config import CritiqueConfig, FeedbackConfig, RolloutConfig
from training.data import as_messages, pick_prompts, read_prompts_with_ids
from training.models import causal_lm_for_inference
from training.rollout import RolloutEngine, rollout_engine_for
from training.runtime import CHAINS_FILE, LABELS_FILE, Progress, write_result
from training.sampling import cache_argument_name, generate, position_ids_for
from training.text import policy_prompt, uses_chat_template

CHAIN_OF_THOUGHT_RANGE = (0.4, 0.6)
STOP_MARKERS = ("\n\nCritiqueRequest:", "\n\nRevisionRequest:", "\n\nHuman:", "\n\nCritique:", "\n\nRevision:")


@dataclass(frozen=True)
class PrincipleText:
    id: int
    name: str
    critique_request: str = ""
    revision_request: str = ""
    comparison_question: str = ""


# --- the prompts ---------------------------------------------------------------------------------------------


def conversation_text(messages: Sequence[dict]) -> str:
    """The conversation as the paper writes it: "Human: ..." and "Assistant: ..." turns."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(turn['role'], turn['role'].capitalize())}: {turn['content']}" for turn in messages)


def critique_prompt(messages: Sequence[dict], response: str, principle: PrincipleText, few_shot: str = "") -> str:
    return (
        f"{few_shot}{conversation_text(messages)}\n\nAssistant: {response}"
        f"\n\nCritiqueRequest: {principle.critique_request}\n\nCritique:"
    )


def revision_prompt(
    messages: Sequence[dict], response: str, principle: PrincipleText, critique: str, few_shot: str = ""
) -> str:
    return (
        f"{critique_prompt(messages, response, principle, few_shot)} {critique}"
        f"\n\nRevisionRequest: {principle.revision_request}\n\nRevision:"
    )


def chat_critique_turns(
    messages: Sequence[dict], response: str, principle: PrincipleText, few_shot: str = ""
) -> list[dict[str, str]]:
    """For a chat model: the conversation, its answer, then the critique request as the user's next turn (the
    few-shot examples, when given, as a system turn first)."""
    system = [{"role": "system", "content": f"Examples of critiques and revisions:\n\n{few_shot.strip()}"}]
    return [
        *(system if few_shot.strip() else []),
        *messages,
        {"role": "assistant", "content": response},
        {"role": "user", "content": principle.critique_request},
    ]


def critique_text(tokenizer, messages: Sequence[dict], response: str, principle: PrincipleText, few_shot: str = ""):
    """What the model continues to write its critique: the chat template with the critique request as the
    user's turn when the tokenizer has one, else the paper's layout."""
    if uses_chat_template(tokenizer):
        turns = chat_critique_turns(messages, response, principle, few_shot)
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return critique_prompt(messages, response, principle, few_shot)


def revision_text(
    tokenizer, messages: Sequence[dict], response: str, principle: PrincipleText, critique: str, few_shot: str = ""
):
    """What the model continues to write its revision, in the same two layouts as ``critique_text``."""
    if uses_chat_template(tokenizer):
        turns = [
            *chat_critique_turns(messages, response, principle, few_shot),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": principle.revision_request},
        ]
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return revision_prompt(messages, response, principle, critique, few_shot)


def feedback_prompt(
    messages: Sequence[dict], question: str, first: str, second: str, *, chain_of_thought: bool = False
) -> str:
    return (
        "Consider the following conversation between a human and an assistant:\n"
        f"{conversation_text(messages)}\n"
        f"{question}\n"
        "Options:\n"
        f"(A) {first}\n"
        f"(B) {second}\n" + ("Let's think step by step:" if chain_of_thought else "The answer is:")
    )


# --- generation and scoring ----------------------------------------------------------------------------------


def _cut(text: str) -> str:
    """A completion up to the point where the model starts writing the next part of the dialogue itself."""
    end = min((text.find(marker) for marker in STOP_MARKERS if marker in text), default=len(text))
    return text[:end].strip()


@torch.no_grad()
def complete(
    model, tokenizer, texts: list[str], *, max_new_tokens: int, temperature: float, batch_size: int = 8,
    engine: RolloutEngine | None = None,
):  # fmt: skip
    """The model's continuation of each text, in left-padded batches, by ``engine`` (by default the loop)."""
    device = next(model.parameters()).device
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    results: list[str] = []
    for first in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[first : first + batch_size],
            padding=True,
            return_tensors="pt",
            add_special_tokens=not uses_chat_template(tokenizer),  # the template writes its own special tokens
        ).to(device)
        tokens = generate(
            model, batch["input_ids"], batch["attention_mask"], max_new_tokens, temperature,
            tokenizer.eos_token_id, tokenizer.pad_token_id, engine,
        )  # fmt: skip
        results.extend(_cut(text) for text in tokenizer.batch_decode(tokens, skip_special_tokens=True))
    return results


@torch.no_grad()
def continuation_logprobs(model, tokenizer, prompts: list[str], continuation: str, batch_size: int = 8):
    """log P(continuation | prompt) for each prompt, summed over the continuation's tokens. Rows are
    left-padded so that every continuation ends the row, and the language-model head runs on those last
    positions only (on a long prompt, full-vocabulary logits at every position would cost more than the
    model)."""
    device = next(model.parameters()).device
    totals = []
    for first in range(0, len(prompts), batch_size):
        rows, lengths = [], []
        for prompt in prompts[first : first + batch_size]:
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = tokenizer(prompt + continuation)["input_ids"]
            shared = 0
            while shared < min(len(prompt_ids), len(ids)) and prompt_ids[shared] == ids[shared]:
                shared += 1
            shared = max(shared, 1)
            rows.append(ids)
            lengths.append(len(ids) - shared)
        width = max(len(ids) for ids in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in rows], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=device)
        keep = max(lengths) + 1
        logits = model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids_for(mask), logits_to_keep=keep
        ).logits.float()
        logprobs = F.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, -keep + 1 :].unsqueeze(-1)).squeeze(-1)
        for row, length in enumerate(lengths):
            totals.append(float(logprobs[row, logprobs.shape[1] - length :].sum()) if length else 0.0)
    return totals


def _shared_prefix(first: list[int], second: list[int]) -> int:
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return length


@torch.no_grad()
def option_a_probability(model, tokenizer, prompts: list[str]) -> list[float]:
    """P(" (A)") / (P(" (A)") + P(" (B)")) after each multiple-choice prompt.

    The tokens both options share (the prompt, then " (") cancel in the ratio: the shared part runs once, with
    the KV cache, and only the tokens from where the options part are scored, both options in one batch.
    This halves the work of scoring each option over the whole prompt.
    """
    device = next(model.parameters()).device
    argument = cache_argument_name(model)
    results = []
    for prompt in prompts:
        ids_a = tokenizer(prompt + " (A)")["input_ids"]
        ids_b = tokenizer(prompt + " (B)")["input_ids"]
        shared = _shared_prefix(ids_a, ids_b)
        if shared == 0 or shared in (len(ids_a), len(ids_b)):  # no common start, or one option contains the other
            a, b = (continuation_logprobs(model, tokenizer, [prompt], option)[0] for option in (" (A)", " (B)"))
            results.append(float(torch.softmax(torch.tensor([a, b]), dim=0)[0]))
            continue
        suffixes = (ids_a[shared:], ids_b[shared:])
        cache = DynamicCache(config=model.config)
        output = model(input_ids=torch.tensor([ids_a[:shared]], device=device), use_cache=True, logits_to_keep=1,
                       **{argument: cache})  # fmt: skip
        first = F.log_softmax(output.logits[0, -1].float(), dim=-1)
        totals = [float(first[suffix[0]]) for suffix in suffixes]
        longest = max(len(suffix) for suffix in suffixes) - 1
        if longest > 0:  # the rest of each option, read after its first token
            cache.batch_repeat_interleave(2)
            pad = tokenizer.pad_token_id
            rows = [suffix[:-1] + [pad] * (longest - len(suffix) + 1) for suffix in suffixes]
            mask = torch.ones(2, shared + longest, dtype=torch.long, device=device)
            for row, suffix in enumerate(suffixes):
                mask[row, shared + len(suffix) - 1 :] = 0
            positions = torch.arange(shared, shared + longest, device=device).expand(2, -1)
            output = model(input_ids=torch.tensor(rows, device=device), attention_mask=mask, position_ids=positions,
                           use_cache=True, **{argument: cache})  # fmt: skip
            logprobs = F.log_softmax(output.logits.float(), dim=-1)
            for row, suffix in enumerate(suffixes):
                totals[row] += sum(float(logprobs[row, j, suffix[j + 1]]) for j in range(len(suffix) - 1))
        results.append(float(torch.softmax(torch.tensor(totals), dim=0)[0]))
    return results


@dataclass(frozen=True)
class Comparison:
    """Which of two responses to a conversation better follows a principle's question."""

    messages: list[dict]
    question: str
    first: str
    second: str


def ai_preferences(
    model, tokenizer, comparisons: list[Comparison], *, chain_of_thought: bool = False, reasoning_tokens: int = 64
) -> list[float]:
    """For each comparison, the probability that ``first`` is the better response: the mean of P(A) with
    ``first`` shown as (A) and P(B) with it shown as (B). Swapping first and second gives exactly 1 - p."""

    def prompts(order_first: bool) -> list[str]:
        texts = [
            feedback_prompt(
                c.messages,
                c.question,
                *((c.first, c.second) if order_first else (c.second, c.first)),
                chain_of_thought=chain_of_thought,
            )  # fmt: skip
            for c in comparisons
        ]
        if chain_of_thought:  # the model reasons first; then it is asked for the answer
            reasons = complete(model, tokenizer, texts, max_new_tokens=reasoning_tokens, temperature=1e-4)
            texts = [f"{text} {reason}\nSo the answer is:" for text, reason in zip(texts, reasons, strict=True)]
        return texts

    shown_first = option_a_probability(model, tokenizer, prompts(True))
    shown_second = option_a_probability(model, tokenizer, prompts(False))
    labels = [(a + (1.0 - b)) / 2 for a, b in zip(shown_first, shown_second, strict=True)]
    if chain_of_thought:
        low, high = CHAIN_OF_THOUGHT_RANGE
        labels = [min(max(label, low), high) for label in labels]
    return labels


# --- critique and revision -----------------------------------------------------------------------------------


@dataclass
class CritiqueChainResult:
    messages: list[dict]
    initial_response: str
    rounds: list[dict]  # {"number", "principle_id", "critique", "revision"}

    @property
    def final_revision(self) -> str:
        return self.rounds[-1]["revision"] if self.rounds else self.initial_response


def critique_chains(
    model,
    tokenizer,
    prompts: list[list[dict]],
    principles: list[PrincipleText],
    *,
    rounds: int = 1,
    seed: int = 0,
    few_shot: str = "",
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    initial_responses: list[str] | None = None,
    engine: RolloutEngine | None = None,
) -> list[CritiqueChainResult]:
    """Answer each prompt (or take ``initial_responses``), then ``rounds`` of critique and revision, each by
    a principle drawn at random from those with a critique and a revision request."""
    usable = [principle for principle in principles if principle.critique_request and principle.revision_request]
    if not usable:
        raise ValueError("No principle of this constitution has a critique and a revision request.")
    draw = random.Random(seed)
    if initial_responses is None:
        initial_responses = complete(
            model, tokenizer, [policy_prompt(tokenizer, messages) for messages in prompts],
            max_new_tokens=max_new_tokens, temperature=temperature, engine=engine,
        )  # fmt: skip
    chains = [
        CritiqueChainResult(messages=messages, initial_response=response, rounds=[])
        for messages, response in zip(prompts, initial_responses, strict=True)
    ]
    for number in range(1, rounds + 1):
        chosen = [draw.choice(usable) for _ in chains]
        current = [chain.final_revision for chain in chains]
        critiques = complete(
            model, tokenizer,
            [critique_text(tokenizer, c.messages, r, p, few_shot)
             for c, r, p in zip(chains, current, chosen, strict=True)],
            max_new_tokens=max_new_tokens, temperature=temperature, engine=engine,
        )  # fmt: skip
        revisions = complete(
            model, tokenizer,
            [revision_text(tokenizer, c.messages, r, p, k, few_shot)
             for c, r, p, k in zip(chains, current, chosen, critiques, strict=True)],
            max_new_tokens=max_new_tokens, temperature=temperature, engine=engine,
        )  # fmt: skip
        for chain, principle, critique, revision in zip(chains, chosen, critiques, revisions, strict=True):
            chain.rounds.append(
                {"number": number, "principle_id": principle.id, "critique": critique, "revision": revision}
            )
    return chains


# --- the commands the workers run ----------------------------------------------------------------------------


def read_principles(path) -> list[PrincipleText]:
    return [PrincipleText(**item) for item in json.loads(Path(path).read_text(encoding="utf-8"))]


def run_critique(
    model_name: str,
    prompts_path,
    principles_path,
    output_dir,
    *,
    rounds: int = CritiqueConfig.rounds,
    few_shot: str = "",
    max_new_tokens: int = CritiqueConfig.max_new_tokens,
    temperature: float = CritiqueConfig.temperature,
    seed: int = CritiqueConfig.seed,
    batch_size: int = CritiqueConfig.batch_size,
    cache_dir=None,
    on_metrics=None,
    model=None,
    tokenizer=None,
    max_prompts: int = CritiqueConfig.max_prompts,
    engine_settings: RolloutConfig | None = None,
) -> dict:
    """Critique chains for every prompt of a ``prompts`` export (or ``max_prompts`` of them drawn at random),
    written to ``output_dir/chains.jsonl``."""
    progress = Progress(on_metrics, "critique")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress.phase("loading")
    torch.manual_seed(seed)
    prompts = pick_prompts(read_prompts_with_ids(prompts_path), max_prompts, seed)
    principles = read_principles(principles_path)
    model, tokenizer = causal_lm_for_inference(model_name, cache_dir, model, tokenizer)
    engine = rollout_engine_for(model, engine_settings)
    progress.phase("generating")
    started, written = time.monotonic(), 0
    with open(output_dir / CHAINS_FILE, "w", encoding="utf-8") as out:
        for index, first in enumerate(range(0, len(prompts), batch_size)):
            batch = prompts[first : first + batch_size]
            chains = critique_chains(
                model, tokenizer, [messages for _, messages in batch], principles, rounds=rounds,
                seed=seed * 100_003 + index, few_shot=few_shot, max_new_tokens=max_new_tokens, temperature=temperature,
                engine=engine,
            )  # fmt: skip
            for (prompt_id, _), chain in zip(batch, chains, strict=True):
                out.write(json.dumps({"prompt_id": prompt_id, "initial_response": chain.initial_response,
                                      "rounds": chain.rounds}) + "\n")  # fmt: skip
            written += len(batch)
            progress.update(written / len(prompts), chains=written)
    summary = {"chains": written, "rounds": rounds, "seconds": round(time.monotonic() - started, 2)}
    write_result(output_dir, {"metrics": summary})
    progress.done(summary)
    return summary


def run_feedback(
    model_name: str,
    comparisons_path,
    output_dir,
    *,
    chain_of_thought: bool = FeedbackConfig.chain_of_thought,
    batch_size: int = FeedbackConfig.batch_size,
    cache_dir=None,
    on_metrics=None,
    model=None,
    tokenizer=None,
) -> dict:
    """Soft labels for every line of ``comparisons_path`` (``{"task_id", "principle_id", "prompt", "question",
    "first_id", "second_id", "first", "second"}``), written to ``output_dir/labels.jsonl``."""
    progress = Progress(on_metrics, "feedback")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    progress.phase("loading")
    lines = Path(comparisons_path).read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    model, tokenizer = causal_lm_for_inference(model_name, cache_dir, model, tokenizer)
    progress.phase("labelling")
    started = time.monotonic()
    with open(output_dir / LABELS_FILE, "w", encoding="utf-8") as out:
        for first in range(0, len(items), batch_size):
            batch = items[first : first + batch_size]
            comparisons = [
                Comparison(as_messages(item["prompt"]), item["question"], item["first"], item["second"])
                for item in batch
            ]
            labels = ai_preferences(model, tokenizer, comparisons, chain_of_thought=chain_of_thought)
            for item, label in zip(batch, labels, strict=True):
                keys = ("task_id", "principle_id", "first_id", "second_id")
                out.write(json.dumps({**{key: item[key] for key in keys}, "probability_first": label}) + "\n")
            done = first + len(batch)
            progress.update(done / max(len(items), 1), labels=done)
    summary = {"labels": len(items), "seconds": round(time.monotonic() - started, 2)}
    write_result(output_dir, {"metrics": summary})
    progress.done(summary)
    return summary
