"""The rollout engines (training.rollout): the loop with a dynamic or a static KV cache draws the same tokens with
the same log-probabilities, which are the policy's own; pushing a trained policy's weights into an engine that
holds its own copy changes what it samples to what the trained policy samples (plain and LoRA); an engine that
cannot run here says so. No Django here."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.config import PPOConfig
from training.models import prepare_policy_tokenizer, tiny_causal_lm, tiny_tokenizer
from training.rl import response_logprobs
from training.rollout import LoopEngine, rollout_engine_for, vllm_available
from training.sampling import SamplingConfig, sample

WORDS = [f"w{i}" for i in range(16)] + ["good", "q"] + [f"p{i}" for i in range(10)]
PROMPTS = [[{"role": "user", "content": f"q p{i}" + " w3" * (i % 4)}] for i in range(6)]  # several lengths
CPU = torch.device("cpu")


def gpt2_policy():
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    return tiny_causal_lm(tokenizer, layers=2, hidden=32), tokenizer


def llama_policy():
    """The default policy's architecture (SmolLM2 is a Llama), tiny: grouped-query attention, rotary positions."""
    tokenizer = prepare_policy_tokenizer(tiny_tokenizer(WORDS))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), tokenizer


def sampled(policy, tokenizer, engine, seed: int = 7, temperature: float = 0.9):
    torch.manual_seed(seed)
    settings = SamplingConfig(max_new_tokens=10, temperature=temperature)
    return sample(policy, tokenizer, PROMPTS, settings, CPU, engine)


@pytest.mark.parametrize("make_policy", [gpt2_policy, llama_policy], ids=["gpt2", "llama"])
def test_the_dynamic_and_static_caches_draw_the_same_tokens_with_the_policys_own_logprobs(make_policy):
    policy, tokenizer = make_policy()
    dynamic = sampled(policy, tokenizer, LoopEngine(policy))
    static = sampled(policy, tokenizer, LoopEngine(policy, static_cache=True))
    assert torch.equal(dynamic.sequences, static.sequences) and torch.equal(dynamic.mask, static.mask)
    assert torch.allclose(dynamic.logprobs, static.logprobs, atol=1e-5)
    assert dynamic.mask.sum(1).min() >= 1 and dynamic.mask[:, -1].sum() > 0  # some rows ran the whole budget
    # What each engine reports is what the policy's full forward pass gives the same tokens at the same
    # temperature: PPO's old log-probabilities, computed again.
    own, _ = response_logprobs(policy, static.sequences, static.attention_mask, static.context, 0.9)
    assert torch.allclose(static.logprobs, own * static.mask, atol=1e-4)
    assert (static.logprobs[static.mask.bool()] < 0).all()


def test_the_cuda_graph_setting_is_ignored_on_a_cpu_and_the_static_cache_samples_alike():
    policy, tokenizer = llama_policy()
    engine = rollout_engine_for(policy, PPOConfig(static_cache=False, cuda_graph=True))
    assert isinstance(engine, LoopEngine) and not engine.cuda_graph and not engine.static_cache
    plain = sampled(policy, tokenizer, LoopEngine(policy))
    assert torch.equal(sampled(policy, tokenizer, engine).sequences, plain.sequences)


def nudge(model, seed: int = 1) -> None:
    """A stand-in for an update: every weight moved a little."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("static_cache", [False, True], ids=["dynamic", "static"])
def test_pushing_the_trained_weights_changes_the_samples_to_the_trained_policys(static_cache):
    policy, tokenizer = llama_policy()
    engine = LoopEngine(copy.deepcopy(policy), static_cache=static_cache)  # it holds a copy, as vLLM does
    before = sampled(policy, tokenizer, engine)
    nudge(policy)
    stale = sampled(policy, tokenizer, engine)
    assert torch.equal(stale.sequences, before.sequences)  # not pushed yet: the old policy's samples
    engine.load_weights(policy)
    pushed = sampled(policy, tokenizer, engine)
    assert not torch.equal(pushed.sequences, before.sequences)
    own = sampled(policy, tokenizer, LoopEngine(policy))
    assert torch.equal(pushed.sequences, own.sequences) and torch.allclose(pushed.logprobs, own.logprobs, atol=1e-5)


def test_a_lora_policy_is_pushed_with_its_adapters_merged_and_keeps_them_after():
    from peft import LoraConfig, TaskType, get_peft_model

    base, tokenizer = llama_policy()
    engine = LoopEngine(copy.deepcopy(base))
    policy = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, init_lora_weights=False))
    before = sampled(policy, tokenizer, engine)
    engine.load_weights(policy)
    pushed = sampled(policy, tokenizer, engine)
    own = sampled(policy, tokenizer, LoopEngine(policy))
    assert not torch.equal(pushed.sequences, before.sequences)
    assert torch.equal(pushed.sequences, own.sequences)
    assert any("lora_" in name for name, _ in policy.named_parameters())  # the adapters are still there
    assert torch.equal(sampled(policy, tokenizer, LoopEngine(policy)).sequences, own.sequences)  # and unmerged


def test_the_vllm_engine_needs_vllm_and_a_gpu_and_says_so():
    policy, _ = gpt2_policy()
    if vllm_available():  # a GPU machine with vLLM: bench/gpu_smoke.py compares the engines there
        assert rollout_engine_for(policy, PPOConfig(rollout_engine="vllm")).name == "vllm"
    else:
        with pytest.raises(ValueError, match="needs the vllm package and a CUDA GPU"):
            rollout_engine_for(policy, PPOConfig(rollout_engine="vllm"))
    with pytest.raises(ValueError, match="'loop' or 'vllm'"):
        PPOConfig(rollout_engine="tgi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share of the GPU"):
        PPOConfig(vllm_gpu_memory=1.5)
