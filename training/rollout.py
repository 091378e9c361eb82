"""Rollout engines: what writes a model's responses for every command that generates (PPO's sampling and probes,
"Generate responses", evaluation runs, SL-CAI's critique chains), behind one interface.

- ``LoopEngine``: the model's own forward pass, one token at a time with the KV cache (pure sampling at a
  temperature; see ``training.sampling``). Optionally a static KV cache, allocated once for prompt and response
  so that every decode step has the same shapes, and on a GPU the decode step captured as a CUDA graph
  (transformers' compiled call, ``reduce-overhead``): one launch per token instead of one per kernel.
- ``VllmEngine``: vLLM (paged attention, continuous batching), when it is installed and a CUDA GPU is there.
  It holds its own copy of the weights: PPO pushes the policy's into it after every update, as OpenRLHF and
  TRL do.

Every engine answers the same question: for each left-padded prompt, the tokens drawn and the log-probability
of each under the distribution it was drawn from (the temperature applied), so that the trainer can check
them against its own forward pass.
"""

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache, StaticCache

ENGINES = ("loop", "vllm")


@dataclass
class Generated:
    tokens: torch.Tensor  # (B, L) drawn tokens; ``pad`` after a row's EOS
    logprobs: torch.Tensor  # (B, L) log-probability of each drawn token at the temperature; 0 after a row's EOS


class RolloutSettings(Protocol):
    """The engine options ``rollout_engine_for`` reads (``training.config.RolloutConfig``)."""

    @property
    def rollout_engine(self) -> str: ...
    @property
    def static_cache(self) -> bool: ...
    @property
    def cuda_graph(self) -> bool: ...
    @property
    def vllm_gpu_memory(self) -> float: ...


class RolloutEngine(Protocol):
    name: str

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, temperature: float,
        eos: int, pad: int,
    ) -> Generated: ...  # fmt: skip

    def load_weights(self, model: torch.nn.Module) -> None:
        """Take ``model``'s current weights (the policy after an update) for the next samples."""


def draw(probabilities: torch.Tensor) -> torch.Tensor:
    """One token per row, drawn from the row's distribution by its inverse CDF: the first token whose
    cumulative probability exceeds a uniform draw. Several times faster than ``torch.multinomial`` on a CPU."""
    cumulative = probabilities.cumsum(dim=-1)
    uniform = torch.rand(probabilities.shape[0], 1, device=probabilities.device) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(1).clamp(max=probabilities.shape[-1] - 1)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at the first real token of a left-padded row."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def cache_argument_name(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache``; a peft wrapper hides the signature of the model
    it wraps."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's parameters under its base model's names; a LoRA policy's adapters merged in for as long as
    they are read (TRL's way of pushing a peft policy into vLLM)."""
    peft: Any = model
    if not hasattr(peft, "merge_adapter"):
        for name, parameter in model.named_parameters():
            yield name, parameter.data
        return
    peft.merge_adapter()
    try:
        for name, parameter in model.named_parameters():
            if "lora_" not in name:
                yield name.removeprefix("base_model.model.").replace(".base_layer", ""), parameter.data
    finally:
        peft.unmerge_adapter()


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class LoopEngine:
    """Sampling on ``model`` itself (or on a copy of its weights that ``load_weights`` keeps up to date)."""

    name = "loop"

    def __init__(self, model, *, static_cache: bool = False, cuda_graph: bool = False) -> None:
        self.model = model
        self.on_gpu = next(model.parameters()).device.type == "cuda"
        # The compiled call is the base model's: a peft wrapper's adapters would be left out of the graph.
        self.cuda_graph = cuda_graph and self.on_gpu and not hasattr(model, "get_base_model")
        self.static_cache = static_cache or self.cuda_graph  # a graph replays fixed shapes

    def load_weights(self, model: torch.nn.Module) -> None:
        if model is self.model:
            return  # it samples from the policy itself: nothing to push
        own = dict(self.model.named_parameters())
        for name, weight in merged_weights(model):
            own[name].data.copy_(weight)

    def _cache(self, rows: int, length: int):
        config = _base_model(self.model).config
        if not self.static_cache:
            return DynamicCache(config=config)
        return StaticCache(config=config, max_cache_len=length)  # its tensors are made at the first (prefill) step

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, temperature: float,
        eos: int, pad: int,
    ) -> Generated:  # fmt: skip
        """Pure sampling at ``temperature`` (no top-k, no top-p) until every row has ended or ``max_new_tokens``.
        The loop ``generate()`` would run, without its per-token bookkeeping, which costs more than a small
        model's forward pass."""
        rows, context = input_ids.shape
        cache = self._cache(rows, context + max_new_tokens)
        cache_argument = cache_argument_name(self.model)
        forward = self.model
        decode = _base_model(self.model).get_compiled_call(None) if self.cuda_graph else forward
        finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        positions = position_ids_for(attention_mask)
        # A static cache reads the whole mask at once: the prompt's padding, then ones for every slot to come
        # (the causal mask hides those not written yet), so that every decode step sees the same shapes.
        if self.static_cache:
            mask = torch.cat([attention_mask, attention_mask.new_ones(rows, max_new_tokens)], dim=1)
        else:
            mask = attention_mask
        step_ids, step_positions, step_mask = input_ids, positions, mask
        tokens, logprobs = [], []
        for step in range(max_new_tokens):
            output = (forward if step == 0 else decode)(
                input_ids=step_ids, attention_mask=step_mask, position_ids=step_positions, use_cache=True,
                logits_to_keep=1, **{cache_argument: cache},
            )  # fmt: skip
            log_probabilities = F.log_softmax(output.logits[:, -1].float() / temperature, dim=-1)
            token = draw(log_probabilities.exp())
            logprob = log_probabilities.gather(1, token.unsqueeze(1)).squeeze(1)
            token = torch.where(finished, torch.full_like(token, pad), token)
            logprobs.append(torch.where(finished, torch.zeros_like(logprob), logprob))
            tokens.append(token)
            finished |= token == eos
            if bool(finished.all()):
                break
            step_ids, step_positions = token.unsqueeze(1), step_positions[:, -1:] + 1
            if not self.static_cache:
                step_mask = torch.cat([step_mask, step_mask.new_ones(rows, 1)], dim=1)
        return Generated(tokens=torch.stack(tokens, dim=1), logprobs=torch.stack(logprobs, dim=1))


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VllmEngine:
    """vLLM on this process's GPU, beside the trainer (``gpu_memory`` is the share of GPU memory it may take for
    its weights and KV cache). It loads the model from ``path``; ``load_weights`` pushes a trained model's
    weights into it, as TRL's colocated mode does."""

    name = "vllm"

    def __init__(self, path: str, *, gpu_memory: float = 0.3, max_model_len: int = 2048, seed: int = 0) -> None:
        if not vllm_available():
            raise ValueError("The vllm rollout engine needs the vllm package and a CUDA GPU; use the loop engine.")
        from vllm import LLM

        self.llm = LLM(
            model=path, dtype="bfloat16", gpu_memory_utilization=gpu_memory, max_model_len=max_model_len, seed=seed,
            logprobs_mode="processed_logprobs",  # log-probabilities at the sampling temperature, as the loop's
            enable_prefix_caching=False,
        )  # fmt: skip

    def load_weights(self, model: torch.nn.Module) -> None:
        runner_model: Any = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, weight in merged_weights(model):
            runner_model.load_weights([(name, weight)])
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, temperature: float,
        eos: int, pad: int,
    ) -> Generated:  # fmt: skip
        from vllm import SamplingParams

        rows = zip(input_ids, attention_mask, strict=True)
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in rows]
        params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens, logprobs=0, stop_token_ids=[eos])
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        width = max(len(output.outputs[0].token_ids) for output in outputs)
        tokens = torch.full((len(outputs), width), pad, dtype=torch.long)
        logprobs = torch.zeros(len(outputs), width)
        for row, output in enumerate(outputs):
            completion = output.outputs[0]
            drawn = list(completion.token_ids)
            steps = zip(completion.logprobs, drawn, strict=True)
            tokens[row, : len(drawn)] = torch.tensor(drawn, dtype=torch.long)
            logprobs[row, : len(drawn)] = torch.tensor([step[token].logprob for step, token in steps])
        device = input_ids.device
        return Generated(tokens=tokens.to(device), logprobs=logprobs.to(device))


def rollout_engine_for(model, settings: RolloutSettings | None = None, *, path: str = "") -> RolloutEngine:
    """The engine the settings ask for, sampling ``model`` (the loop) or the model at ``path`` (vLLM)."""
    if settings is None or settings.rollout_engine == "loop":
        return LoopEngine(
            model,
            static_cache=bool(settings and settings.static_cache),
            cuda_graph=bool(settings and settings.cuda_graph),
        )
    if settings.rollout_engine == "vllm":
        return VllmEngine(path or _base_model(model).name_or_path, gpu_memory=settings.vllm_gpu_memory)
    raise ValueError(f"The rollout engine is one of {', '.join(ENGINES)}, not '{settings.rollout_engine}'.")
