"""One config per trainer command: every field typed, defaulted and explained (the string under a field is its
``--help``), checked in ``__post_init__``. ``python -m training`` builds its options from these, and the app's
run kinds take their defaults from them."""

from dataclasses import asdict, dataclass, field
from typing import Literal

DEFAULT_POLICY = "smollm2-135m-instruct"


def _require_positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is None or value <= 0:
            raise ValueError(f"{name} must be above 0, not {value}.")


@dataclass
class RewardConfig:
    """Listwise reward-model training, as in InstructGPT: all C(K,2) comparisons of a prompt's ranking form
    one batch element, and each response gets one forward pass."""

    model: str = "minilm-l6"
    """A name from ``training.models.NAMED_MODELS``, any Hugging Face model id, or a local path."""
    max_length: int = 256
    """Tokens kept of prompt plus reply: the whole reply (up to three quarters of them), then the prompt's last
    tokens, so the start of a long conversation is what goes."""
    prompt_turns: int = 1
    """Keep only the prompt's last this many messages (0: all that fit). One, the question the reply answers,
    measured best with the CPU backbone on HH-RLHF (README, "Choosing the CPU recipe")."""
    layout: Literal["joined", "pair"] = "joined"
    """How an encoder whose tokenizer has segments (BERT-like) reads prompt and reply: ``joined``, one text
    (prompt, blank line, reply), or ``pair``, two segments (prompt [SEP] reply). Joined measured better with
    the CPU backbone on HH-RLHF. Tokenizers with a chat template read the template either way."""
    epochs: float = 1.0
    """Passes over the training prompts at most (the learning-rate schedule spans them); early stopping may
    end sooner."""
    patience: int = 1
    """Early stopping: end when the held-out loss has not improved for this many epochs, and keep the best
    epoch's weights (0: run every epoch, still keep the best)."""
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
    group_by_length: bool = True
    """Batch judgements of similar length together (in a random order of batches): less padding to compute."""
    length_window: int = 50
    """Batches' worth of judgements sorted by length together; a larger window pads less, mixes less."""
    eval_batch_tokens: int = 16384
    """Tokens (padded) per batch in passes without gradients: evaluation, calibration, normalisation."""
    calibrate: bool = True
    """Fit a temperature on the held-out judgements so that the pairwise probabilities are calibrated."""
    use_margin: bool = True
    """Subtract a judgement's margin from the reward difference, when it has one."""
    source_weights: dict[str, float] = field(default_factory=lambda: {"human": 1.0, "ai": 1.0})
    """Weight of each judgement source in the loss (human raters, AI feedback)."""
    record_weights: bool = True
    """Weigh each judgement by the ``weight`` its record carries (the rater's trust in a ranking export)."""
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
    normalize_samples: int = 256
    """References scored to estimate their mean (a seeded sample of them; 0: every one). The mean of 256 is
    within a few hundredths of the whole set's (its standard error is a sixteenth of the scores' spread), at a
    fraction of the time on a large export."""

    def __post_init__(self) -> None:
        _require_positive(self, "max_length", "epochs", "learning_rate", "prompts_per_batch",
                          "gradient_accumulation_steps", "logging_steps", "length_window",
                          "eval_batch_tokens")  # fmt: skip
        if self.prompt_turns < 0 or self.patience < 0:
            raise ValueError("prompt_turns and patience are counts: 0 or more.")
        if self.layout not in ("joined", "pair"):
            raise ValueError(f"layout is joined or pair, not {self.layout!r}.")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction is a share of the prompts: from 0 up to 1, not {self.eval_fraction}.")
        if any(weight < 0 for weight in self.source_weights.values()):
            raise ValueError(f"Source weights must be 0 or more: {self.source_weights}.")

    def as_dict(self) -> dict:
        return asdict(self)


REWARD_PRESETS: dict[str, dict] = {
    "cpu": {},
    "gpu": {
        "model": DEFAULT_POLICY,
        "max_length": 1024,
        "prompt_turns": 0,
        "epochs": 2.0,
        "learning_rate": 1e-5,
        "warmup_ratio": 0.1,
        "prompts_per_batch": 16,
        "eval_batch_tokens": 65536,
    },
}
"""Named recipes: ``cpu`` (the defaults above: all-MiniLM-L6-v2, chosen by measurement on HH-RLHF pairs, see the
README) and ``gpu`` (SmolLM2-135M-Instruct, all weights, bf16, the whole conversation up to 1,024 tokens).
``python -m training reward --preset gpu`` and the run page's preset start from one; any option given as well
wins over it."""


def reward_preset(name: str) -> dict:
    """The fields a preset sets, checked by building its config."""
    if name not in REWARD_PRESETS:
        raise ValueError(f"No reward preset '{name}'; there are {', '.join(REWARD_PRESETS)}.")
    RewardConfig(**REWARD_PRESETS[name])
    return dict(REWARD_PRESETS[name])


@dataclass
class SFTConfig:
    """Supervised fine-tuning on demonstrations (the ``sft`` export), loss on the reply only."""

    model: str = DEFAULT_POLICY
    """A name from ``training.models.NAMED_MODELS``, any Hugging Face model id, or a local path."""
    max_length: int = 1024
    epochs: float = 2.0
    learning_rate: float = 2e-5
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    bf16: bool = True
    """Mixed precision on GPUs that support bfloat16; ignored on CPU."""
    lora: bool = False
    """Train LoRA adapters, merged into the saved model."""
    lora_rank: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        _require_positive(self, "max_length", "epochs", "learning_rate", "batch_size", "gradient_accumulation_steps",
                          "logging_steps")  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DPOConfig:
    """Direct preference optimisation (Rafailov et al., 2023) on preference pairs with ``trl.DPOTrainer``: the
    policy learns to raise the chosen reply's log-probability over the rejected one's, measured against the
    starting policy (the reference), with no reward model and no sampling."""

    model: str = DEFAULT_POLICY
    """The starting policy, also the reference: a name from ``training.models.NAMED_MODELS``, any Hugging Face
    model id, or a local path."""
    beta: float = 0.1
    """How far the policy may move from the reference: the DPO loss's temperature (higher: closer)."""
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    """sigmoid: the DPO paper's loss; ipo: the squared loss of IPO (Azar et al., 2023); hinge: SLiC's."""
    max_length: int = 1024
    epochs: float = 1.0
    learning_rate: float = 5e-7
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    margin_pairs: int = 64
    """How many training pairs measure the chosen replies' log-probability margin before and after (0: none)."""
    bf16: bool = True
    """Mixed precision on GPUs that support bfloat16; ignored on CPU."""
    lora: bool = False
    """Train LoRA adapters, merged into the saved model (the reference is then the base model itself)."""
    lora_rank: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        _require_positive(self, "beta", "max_length", "epochs", "learning_rate", "batch_size",
                          "gradient_accumulation_steps", "logging_steps")  # fmt: skip
        if self.margin_pairs < 0:
            raise ValueError(f"margin_pairs must be 0 (none) or more, not {self.margin_pairs}.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RolloutConfig:
    """How a command that generates writes its responses (``training.rollout``)."""

    rollout_engine: Literal["loop", "vllm"] = "loop"
    """``loop``: the model's own forward pass, a token at a time with the KV cache. ``vllm``: vLLM's paged
    attention and continuous batching; needs the vllm package and a CUDA GPU (PPO pushes the policy's weights
    into it after every update)."""
    static_cache: bool = False
    """The loop's KV cache made once for prompt and response, so that every decode step has the same shapes."""
    cuda_graph: bool = False
    """On a GPU, the loop's decode step replayed as a CUDA graph (with the static cache): one launch per token
    instead of one per kernel. Ignored on a CPU."""
    vllm_gpu_memory: float = 0.3
    """The share of GPU memory vLLM may take for its weights and KV cache, beside the trainer's."""

    def __post_init__(self) -> None:
        if self.rollout_engine not in ("loop", "vllm"):
            raise ValueError(f"rollout_engine must be 'loop' or 'vllm', not '{self.rollout_engine}'.")
        if not 0 < self.vllm_gpu_memory <= 1:
            raise ValueError(
                f"vllm_gpu_memory is a share of the GPU's memory: above 0, at most 1, not {self.vllm_gpu_memory}."
            )

    def rollout_settings(self) -> "RolloutConfig":
        """These settings alone (for a function that takes its other options one by one)."""
        return RolloutConfig(**{name: getattr(self, name) for name in ROLLOUT_FIELDS})


ROLLOUT_FIELDS = ("rollout_engine", "static_cache", "cuda_graph", "vllm_gpu_memory")


@dataclass
class PPOConfig(RolloutConfig):
    """PPO against a reward model with a per-token KL penalty to the initial policy (InstructGPT, section 3.5),
    with the implementation details that published replications found to matter."""

    policy: str = DEFAULT_POLICY
    """The policy to tune (usually the SFT model): a named default, a Hugging Face id or a local path."""
    reward_model: str = ""
    """A reward model folder (``python -m training reward`` output), a Hugging Face id or a local path."""
    steps: int = 100
    """PPO iterations: each samples ``batch_size`` episodes, then updates on them."""
    batch_size: int = 16
    """Episodes (prompt and sampled response) per iteration."""
    mini_batch_size: int = 0
    """Episodes per gradient step; ``batch_size`` must be a multiple of it (0: the whole batch)."""
    ppo_epochs: int = 4
    """Passes over each iteration's episodes."""
    learning_rate: float = 1e-5
    max_prompt_length: int = 256
    """Prompt tokens kept (from the end)."""
    max_new_tokens: int = 128
    """Response length: sampling stops here or at the first EOS. The default policy ends about 40% of its
    answers to HH-RLHF prompts within 128 tokens, and under a quarter within 64."""
    temperature: float = 0.7
    """Sampling temperature; the log-probabilities of policy and reference use the same one."""
    kl_coef: float = 0.05
    """Beta: the weight of the per-token KL penalty ``log pi - log pi_ref``."""
    adaptive_kl: bool = False
    """Steer beta towards ``target_kl`` (Ziegler et al. 2019) instead of keeping it fixed."""
    target_kl: float = 6.0
    """Target of the adaptive controller: KL summed over a response, in nats."""
    kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    """GAE lambda."""
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float = 1.0
    whiten_rewards: bool = False
    missing_eos_penalty: float = 1.0
    """What a response that does not end within ``max_new_tokens`` loses (0: nothing)."""
    missing_eos: Literal["subtract", "replace"] = "subtract"
    """``subtract``: the penalty comes off the reward model's score, so its judgement of a cut-off response still
    reaches the policy (TRL's choice). ``replace``: the score is ``-missing_eos_penalty`` whatever the reward
    model says (the N+ implementation details for TL;DR, whose answers fit the budget; chat answers often do
    not, and then nearly every score is replaced)."""
    reward_max_length: int = 512
    ptx_coef: float = 0.0
    """PPO-ptx: weight of the language-model loss on demonstrations, added to each gradient step (0: off)."""
    ptx_batch_size: int = 8
    save_every: int = 0
    """Write a checkpoint every this many iterations (0: only at the end); a run resumes from the last one."""
    probes: int = 3
    """Over-optimisation probes: at the start and at this many points spread over the run, the policy answers the
    held-back probe prompts, each answer kept with its reward-model score and KL to the reference (0: none)."""
    probe_prompts: int = 8
    """Prompts held back from training for the probes (at most a quarter of them and at most a batch; the prompts
    need ids)."""
    gradient_checkpointing: bool | None = None
    """Recompute each layer's activations in the backward pass instead of keeping them: about a third more
    compute for a small part of the memory. None: on when training on a CPU, where memory runs out first (the
    default policy and its value model keep about 12 GB of activations for 8 episodes of 384 tokens), off on
    GPUs."""
    seed: int = 0
    logging_steps: int = 1
    bf16: bool = True
    """Mixed precision on GPUs that support bfloat16; ignored on CPU."""
    lora: bool = False
    """Train LoRA adapters on the policy; the reference is then the base with adapters off (no second copy)."""
    lora_rank: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mini_batch_size = self.mini_batch_size or self.batch_size
        if self.batch_size <= 0 or self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"The batch size ({self.batch_size}) must be a positive multiple of the minibatch size "
                f"({self.mini_batch_size})."
            )
        if self.missing_eos not in ("subtract", "replace"):
            raise ValueError(f"missing_eos must be 'subtract' or 'replace', not '{self.missing_eos}'.")
        if self.missing_eos_penalty is None or self.missing_eos_penalty < 0:
            raise ValueError("missing_eos_penalty is an amount taken off the score: 0 or more.")
        if self.probes < 0 or self.probe_prompts < 0:
            raise ValueError("probes and probe_prompts are counts: 0 or more.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PromptSamplingConfig(RolloutConfig):
    """What every command that has a model answer a project's prompts shares."""

    model: str = DEFAULT_POLICY
    """The model that answers: a named default, a Hugging Face id or a local path."""
    max_prompts: int = 0
    """Answer this many prompts, drawn at random (0: all)."""
    max_new_tokens: int = 256
    temperature: float = 0.7
    batch_size: int = 16
    """Prompts sampled together."""
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive(self, "max_new_tokens", "temperature", "batch_size")
        if self.max_prompts < 0:
            raise ValueError(f"max_prompts must be 0 (all) or more, not {self.max_prompts}.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerateConfig(PromptSamplingConfig):
    """A policy answers prompts: the responses of the next round of comparisons."""

    samples: int = 2
    """Responses per prompt."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive(self, "samples")


@dataclass
class EvaluateConfig(PromptSamplingConfig):
    """Several policy versions answer the same eval prompts, one answer each, for blinded pairwise comparisons.
    ``model`` is left aside: the versions file names the models."""

    max_prompts: int = 50
    temperature: float = 0.7


@dataclass
class ScoreConfig:
    """A reward model scores responses to prompts."""

    model: str = ""
    """The reward model: a Hugging Face id or a local path."""
    max_length: int = 512
    """Tokens of prompt and response read, as in PPO (``reward_max_length``)."""
    batch_size: int = 32

    def __post_init__(self) -> None:
        _require_positive(self, "max_length", "batch_size")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CritiqueConfig(PromptSamplingConfig):
    """Critique-and-revision chains by a constitution's principles (SL-CAI): the model answers, then criticises
    and revises its answer."""

    max_new_tokens: int = 128
    rounds: int = 1
    """Critique-and-revision rounds per prompt, each by a principle drawn at random."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive(self, "rounds")


@dataclass
class FeedbackConfig:
    """AI preference labels, one per pair and principle (RLAIF)."""

    model: str = DEFAULT_POLICY
    """The feedback model: a named default, a Hugging Face id or a local path."""
    chain_of_thought: bool = False
    """Reason first, then answer; the labels are then clamped to 0.4..0.6."""
    batch_size: int = 16

    def __post_init__(self) -> None:
        _require_positive(self, "batch_size")

    def as_dict(self) -> dict:
        return asdict(self)
