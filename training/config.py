"""One config per algorithm: every field typed, defaulted and explained."""

from dataclasses import asdict, dataclass, field


@dataclass
class RewardConfig:
    """Listwise reward-model training, as in InstructGPT: all C(K,2) comparisons of a prompt's ranking form
    one batch element, and each response gets one forward pass."""

    model: str = "minilm-l6"
    """A name from ``training.models.NAMED_MODELS``, any Hugging Face model id, or a local path."""
    max_length: int = 512
    """Tokens kept of prompt plus response (truncated from the start of the prompt)."""
    epochs: float = 1.0
    """Passes over the training prompts. One is the paper's finding: more overfits."""
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up before the cosine decay."""
    prompts_per_batch: int = 8
    """Prompts (each with all its responses) per optimiser step, before gradient accumulation."""
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    eval_fraction: float = 0.1
    """Share of prompts held out (split by prompt, never by pair) for held-out accuracy and loss."""
    use_margin: bool = True
    """Subtract a judgement's margin from the reward difference, when it has one."""
    source_weights: dict[str, float] = field(default_factory=lambda: {"human": 1.0, "ai": 1.0})
    """Weight of each judgement source in the loss (human raters, AI feedback)."""
    seed: int = 0
    logging_steps: int = 10
    bf16: bool = True
    """Mixed precision on GPUs that support bfloat16; ignored on CPU."""
    lora: bool = False
    """Train LoRA adapters (peft) and the scoring head instead of all weights."""
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    normalize: bool = True
    """After training, shift the scores so that the reference responses average 0."""

    def as_dict(self) -> dict:
        return asdict(self)
