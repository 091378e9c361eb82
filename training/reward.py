"""Listwise reward-model training (InstructGPT, section 3.5).

A K-wise ranking of one prompt is one batch element: its K responses get one forward pass each, and all
C(K,2) comparisons between them enter the loss together:

    loss(prompt) = -1 / (number of ranked pairs) * sum over ranked pairs (w, l) of log sigmoid(r_w - r_l - margin)

Tied responses form no pair. A judgement with a preference probability p (a soft AI label) uses
-(p log sigmoid(d) + (1 - p) log sigmoid(-d)) with d = r_w - r_l instead. Each prompt's loss is weighted by
its source (human, ai). Trainers that cut rankings into pairs encode each response K - 1 times and scatter
the pairs of one prompt over batches; this does neither.

The loop below reads top to bottom: data, model, optimiser, then epochs of (forward, loss, update, log)
with a held-out evaluation after each, then normalisation and saving.
"""

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from training.config import RewardConfig
from training.data import DataError, RankedPrompt, Reference, read_rankings, read_references
from training.models import load_reward_model
from training.runtime import MODEL_DIR, MetricsSink, Progress, write_result
from training.text import prompt_text

# --- text and batches ----------------------------------------------------------------------------------------


def encode(
    tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], replies: list[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Prompt and reply as the model reads them: the chat template if the tokenizer has one, a text pair if
    it separates segments (BERT-like), else prompt, blank line, reply and EOS. Right padding, as in training
    (the tokenizer may be a policy's, shared)."""
    tokenizer.padding_side = "right"
    if getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": reply}], tokenize=False)
            for prompt, reply in zip(prompts, replies, strict=True)
        ]
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if tokenizer.sep_token is not None:
        firsts = [prompt_text(prompt) for prompt in prompts]
        return tokenizer(
            firsts, replies, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
        )
    eos = tokenizer.eos_token or ""
    texts = [f"{prompt_text(prompt)}\n\n{reply} {eos}" for prompt, reply in zip(prompts, replies, strict=True)]
    tokenizer.truncation_side = "left"  # keep the reply and its EOS; drop the start of a long prompt
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


@dataclass
class Batch:
    """B prompts flattened: N responses (one row each) and P ranked pairs between them."""

    inputs: dict[str, torch.Tensor]  # (N, T)
    winner: torch.Tensor  # (P,) row of the better response
    loser: torch.Tensor  # (P,) row of the worse response
    prompt: torch.Tensor  # (P,) which of the B prompts the pair belongs to
    margin: torch.Tensor  # (P,) subtracted from the reward difference (0 when unknown)
    probability: torch.Tensor  # (P,) soft label; NaN for hard labels
    weight: torch.Tensor  # (B,) per-prompt weight from the source

    def to(self, device) -> "Batch":
        return Batch(
            inputs={key: value.to(device) for key, value in self.inputs.items()},
            **{
                name: getattr(self, name).to(device)
                for name in ("winner", "loser", "prompt", "margin", "probability", "weight")
            },
        )


def collate(examples: list[RankedPrompt], tokenizer: PreTrainedTokenizerBase, config: RewardConfig) -> Batch:
    prompts: list[list[dict]] = []
    replies: list[str] = []
    winner, loser, prompt_index, margin, probability = [], [], [], [], []
    for index, example in enumerate(examples):
        offset = len(replies)
        prompts.extend([example.prompt] * len(example.responses))
        replies.extend(example.responses)
        for better, worse in example.pairs():
            winner.append(offset + better)
            loser.append(offset + worse)
            prompt_index.append(index)
            margin.append(example.margin if config.use_margin and example.margin is not None else 0.0)
            probability.append(example.probability if example.probability is not None else math.nan)
    return Batch(
        inputs=encode(tokenizer, prompts, replies, config.max_length),
        winner=torch.tensor(winner, dtype=torch.long),
        loser=torch.tensor(loser, dtype=torch.long),
        prompt=torch.tensor(prompt_index, dtype=torch.long),
        margin=torch.tensor(margin, dtype=torch.float32),
        probability=torch.tensor(probability, dtype=torch.float32),
        weight=torch.tensor(
            [config.source_weights.get(example.source, 1.0) for example in examples], dtype=torch.float32
        ),
    )


# --- the loss ------------------------------------------------------------------------------------------------


def pair_losses(rewards: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(P,) the loss of each ranked pair: Bradley-Terry with margin, or the soft-label form."""
    difference = rewards[batch.winner] - rewards[batch.loser]
    hard = -F.logsigmoid(difference - batch.margin)
    p = torch.nan_to_num(batch.probability, nan=1.0)
    soft = -(p * F.logsigmoid(difference) + (1 - p) * F.logsigmoid(-difference))
    return torch.where(torch.isnan(batch.probability), hard, soft)


def listwise_loss(rewards: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The mean pair loss of each prompt, averaged over prompts with their source weights."""
    prompts = batch.weight.shape[0]
    per_pair = pair_losses(rewards, batch)
    total = torch.zeros(prompts, device=rewards.device).index_add(0, batch.prompt, per_pair)
    count = torch.zeros(prompts, device=rewards.device).index_add(0, batch.prompt, torch.ones_like(per_pair))
    weight = batch.weight * (count > 0)  # a prompt whose responses are all tied has nothing to learn from
    per_prompt = total / count.clamp(min=1)
    return (per_prompt * weight).sum() / weight.sum().clamp(min=1e-8)


def rewards_of(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """(N,) one scalar per response row."""
    return model(**batch.inputs).logits.squeeze(-1).float()


# --- evaluation, normalisation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model, examples: list[RankedPrompt], tokenizer, config: RewardConfig, device, progress: Progress | None = None
) -> dict:
    """Held-out listwise loss and pairwise accuracy (ties in reward count as half right)."""
    if not examples:
        return {}
    model.eval()
    losses, weights, right, pairs = 0.0, 0.0, 0.0, 0
    for start in range(0, len(examples), config.prompts_per_batch):
        if progress is not None:
            progress.update(start / len(examples))
        batch = collate(examples[start : start + config.prompts_per_batch], tokenizer, config).to(device)
        rewards = rewards_of(model, batch)
        if batch.winner.numel() == 0:
            continue
        has_pairs = torch.bincount(batch.prompt, minlength=batch.weight.shape[0]) > 0
        weight = float((batch.weight * has_pairs).sum())
        losses += float(listwise_loss(rewards, batch)) * weight
        weights += weight
        difference = rewards[batch.winner] - rewards[batch.loser]
        right += float((difference > 0).sum() + 0.5 * (difference == 0).sum())
        pairs += batch.winner.numel()
    model.train()
    return {"eval_loss": losses / max(weights, 1e-8), "eval_accuracy": right / max(pairs, 1), "eval_pairs": pairs}


@torch.no_grad()
def score(
    model,
    tokenizer,
    prompts: list[list[dict]],
    replies: list[str],
    max_length: int,
    batch_size: int = 32,
    progress: Progress | None = None,
):
    """Rewards for (prompt, reply) pairs, with the model as saved (its normalisation included)."""
    model.eval()
    device = next(model.parameters()).device
    offset = reward_offset(model)
    results = []
    for start in range(0, len(replies), batch_size):
        if progress is not None:
            progress.update(start / len(replies))
        inputs = encode(tokenizer, prompts[start : start + batch_size], replies[start : start + batch_size], max_length)
        results.append(
            model(**{key: value.to(device) for key, value in inputs.items()}).logits.squeeze(-1).float().cpu()
        )
    return (torch.cat(results) - offset) if results else torch.zeros(0)


def _scalar_head(model) -> torch.nn.Linear | None:
    heads = [module for module in model.modules() if isinstance(module, torch.nn.Linear) and module.out_features == 1]
    return heads[-1] if heads else None


def reward_offset(model) -> float:
    """What ``score`` subtracts: the normalisation that could not be folded into a bias of the head."""
    normalization = getattr(model.config, "reward_normalization", None) or {}
    return 0.0 if normalization.get("folded_into_bias", True) else float(normalization.get("offset", 0.0))


@torch.no_grad()
def normalize(
    model, tokenizer, references: list[Reference], config: RewardConfig, progress: Progress | None = None
) -> dict:
    """Shift the scores so that the reference replies average 0. The shift goes into the scoring head's
    bias when it has one (so any user of the saved model gets normalised scores), and is recorded in the
    model's config either way (``reward_normalization``)."""
    if 0 < config.normalize_samples < len(references):
        references = random.Random(config.seed).sample(references, config.normalize_samples)
    prompts = [reference.prompt for reference in references]
    replies = [reference.response for reference in references]
    model.config.reward_normalization = {"offset": 0.0, "folded_into_bias": True}
    mean = float(score(model, tokenizer, prompts, replies, config.max_length, progress=progress).mean())
    head = _scalar_head(model)
    folded = head is not None and head.bias is not None
    if head is not None and head.bias is not None:
        head.bias.sub_(mean)
    model.config.reward_normalization = {"offset": mean, "folded_into_bias": folded, "references": len(references)}
    return model.config.reward_normalization


# --- training ------------------------------------------------------------------------------------------------


@dataclass
class RewardResult:
    model_dir: str
    metrics: dict
    config: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _accelerator(config: RewardConfig) -> Accelerator:
    use_cuda = torch.cuda.is_available()
    if AcceleratorState._shared_state:
        # Another trainer set accelerate up in this process before (a notebook, a test session): start afresh
        # so that this run's precision and device apply. A run launched by the app has a process to itself.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision="bf16" if use_cuda and config.bf16 and torch.cuda.is_bf16_supported() else "no",
        cpu=not use_cuda,
    )


def _with_lora(model, config: RewardConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout
    )
    return get_peft_model(model, lora)


class _Window:
    """Loss and accuracy over the micro-batches since the last logging step: each curve point is the mean of
    the steps it covers, however many there were."""

    def __init__(self) -> None:
        self.loss, self.batches, self.right, self.pairs = 0.0, 0, 0.0, 0

    def add(self, loss: float, right: float, pairs: int) -> None:
        self.loss += loss
        self.batches += 1
        self.right += right
        self.pairs += pairs

    def take(self) -> dict:
        line = {"loss": self.loss / max(1, self.batches), "accuracy": self.right / max(1, self.pairs)}
        self.loss, self.batches, self.right, self.pairs = 0.0, 0, 0.0, 0
        return line


def evaluate_baseline(
    name: str, held_out: list[RankedPrompt], config: RewardConfig, device, cache_dir=None, progress=None
) -> dict:
    """Another reward model (the project's current one) on the same held-out prompts, with its own tokenizer:
    the fair comparison for deciding which model to keep."""
    model, tokenizer = load_reward_model(name, cache_dir)
    model.to(device)
    result = evaluate(model, held_out, tokenizer, config, device, progress)
    return {f"baseline_{key}": value for key, value in result.items()}


def _read_data(config: RewardConfig, data_path, reference_path) -> tuple[list, list, list]:
    """Train and held-out prompts, split by prompt so that no held-out prompt has a judgement in training;
    and the replies the scores are normalised over."""
    dataset = read_rankings(data_path)
    train, held_out = dataset.split(config.eval_fraction, config.seed)
    if not train:
        raise DataError(
            f"No prompts are left to train on: {len(held_out)} held out of {len(dataset.examples)} "
            f"(eval_fraction {config.eval_fraction}). Lower the held-out share or add judgements."
        )
    references = (
        read_references(reference_path)
        if reference_path
        else [Reference(example.prompt, response) for example in dataset.examples for response in example.responses]
    )
    return train, held_out, references


@dataclass
class _Setup:
    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int


def _setup(config: RewardConfig, accelerator, model, tokenizer, train: list) -> _Setup:
    """The model in train mode (LoRA adapters on it if asked), the shuffled loader, AdamW and a cosine schedule
    with warm-up over the run's steps, prepared by the accelerator."""
    if config.lora:
        model = _with_lora(model, config)
    model.train()
    generator = torch.Generator().manual_seed(config.seed)
    loader: DataLoader = DataLoader(
        train,  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_size=config.prompts_per_batch,
        shuffle=True,
        generator=generator,
        collate_fn=lambda examples: collate(examples, tokenizer, config),
    )
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(
        [parameter for parameter in model.parameters() if parameter.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    return _Setup(model, optimizer, loader, scheduler, total_steps)


def _train(
    config: RewardConfig, accelerator, setup: _Setup, held_out: list, tokenizer, progress: Progress
) -> tuple[int, int, list[dict], float]:
    """Epochs of (forward, listwise loss, update, log), a held-out evaluation after each. Returns the steps
    taken, the pairs seen, the evaluations and the seconds it took."""
    model, optimizer, scheduler, total_steps = setup.model, setup.optimizer, setup.scheduler, setup.total_steps
    progress.phase("training")
    step, pairs_seen, started, epoch = 0, 0, time.monotonic(), 0
    window = _Window()
    evaluations: list[dict] = []
    while step < total_steps:
        for batch in setup.loader:
            with accelerator.accumulate(model):
                rewards = rewards_of(model, batch)  # (N,)
                loss = listwise_loss(rewards, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            with torch.no_grad():
                difference = rewards[batch.winner] - rewards[batch.loser]
                window.add(float(loss), float((difference > 0).sum()), batch.winner.numel())
                pairs_seen += batch.winner.numel()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(step / total_steps)
            if (step % config.logging_steps == 0 or step == total_steps) and accelerator.is_main_process:
                progress.log({
                    "step": step, "total_steps": total_steps, "epoch": epoch + 1, **window.take(),
                    "learning_rate": scheduler.get_last_lr()[0],
                    "pairs_per_s": pairs_seen / max(time.monotonic() - started, 1e-9),
                })  # fmt: skip
            if step >= total_steps:
                break
        epoch += 1
        progress.phase("evaluating")
        evaluation = {"epoch": epoch, **evaluate(model, held_out, tokenizer, config, accelerator.device, progress)}
        evaluations.append(evaluation)
        if accelerator.is_main_process:
            progress.log(evaluation)
        if step < total_steps:
            progress.phase("training")
    return step, pairs_seen, evaluations, time.monotonic() - started


def train_reward_model(
    config: RewardConfig,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    reference_path: str | Path | None = None,
    on_metrics: MetricsSink | None = None,
    cache_dir: str | Path | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    baseline: str | None = None,
) -> RewardResult:
    """Train on a ranking (or preference) export and save the model under ``output_dir/model``.

    ``model`` and ``tokenizer`` may be given directly (tiny test models); otherwise ``config.model`` is
    loaded. ``on_metrics`` receives the phases, progress, one dict per logging step and per evaluation
    (``training.runtime``). ``baseline``, another reward model, is evaluated on the same held-out prompts.
    """
    progress = Progress(on_metrics, "reward")
    output_dir = Path(output_dir)
    set_seed(config.seed)
    accelerator = _accelerator(config)
    progress.phase("loading")
    train, held_out, references = _read_data(config, data_path, reference_path)
    if model is None or tokenizer is None:
        model, tokenizer = load_reward_model(config.model, cache_dir)
    setup = _setup(config, accelerator, model, tokenizer, train)
    step, pairs_seen, evaluations, training_seconds = _train(config, accelerator, setup, held_out, tokenizer, progress)

    # Normalise, then save a plain model (LoRA adapters merged) that any transformers user can load.
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(setup.model)
    if config.lora:
        model = model.merge_and_unload()  # type: ignore[operator]  # a peft model
    normalization = {}
    if config.normalize:
        progress.phase("normalising")
        normalization = normalize(model, tokenizer, references, config, progress)
    final = {
        "train_prompts": len(train),
        "eval_prompts": len(held_out),
        "steps": step,
        "pairs_per_s": pairs_seen / max(training_seconds, 1e-9),
        **{key: value for key, value in evaluations[-1].items() if key.startswith("eval_")},
        "normalization": normalization,
    }
    model_dir = output_dir / MODEL_DIR
    result = RewardResult(model_dir=str(model_dir), metrics=final, config=config.as_dict())
    if accelerator.is_main_process:
        progress.phase("saving")
        model_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        if baseline and held_out:  # once the model is safe: a baseline that fails to load costs no run
            accelerator.free_memory()
            progress.phase("evaluating")
            final.update(_baseline_comparison(baseline, held_out, config, accelerator.device, cache_dir, progress))
        write_result(output_dir, result.as_dict())
        progress.done(final)
    return result


def _baseline_comparison(baseline: str, held_out, config: RewardConfig, device, cache_dir, progress) -> dict:
    """``evaluate_baseline``, or why it could not be done (the run keeps its own model either way)."""
    try:
        return evaluate_baseline(baseline, held_out, config, device, cache_dir, progress)
    except Exception as error:  # a deleted folder, a model that no longer loads, memory: reported, not fatal
        return {"baseline_error": f"{type(error).__name__}: {error}"[:500]}
