"""The memory plan's arithmetic: parameter counts against a tiny real peft model, saved-activation formulas against
the bytes autograd actually keeps (counted with saved_tensors_hooks on the CPU), monotonicity, the Markdown."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM

from frost.run.memplan import (
    LORA_TARGETS,
    QWEN3_14B,
    ModelShape,
    judge_saved_bytes,
    largest_fitting,
    memory_plan,
    plan_markdown,
    player_saved_bytes,
)

TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 256,
    "tie_word_embeddings": False,
}
RANK = 8


def _tiny_qwen3(dtype: torch.dtype) -> Any:
    torch.manual_seed(0)
    config = Qwen3Config(**TINY)
    config._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(config).to(dtype)


@pytest.fixture(scope="module")
def tiny_lora() -> tuple[int, Any]:
    """(the bf16 base model's sum(p.numel()), its peft LoRA wrapper: float32 adapters, r=8 on every projection)."""
    base = _tiny_qwen3(torch.bfloat16)
    base_numel = sum(p.numel() for p in base.parameters())
    lora = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=RANK, target_modules=list(LORA_TARGETS)))
    return base_numel, lora


def _saved_bytes(model: Any) -> tuple[Any, dict[int, int]]:
    """A saved_tensors_hooks context counting the distinct storages autograd keeps, parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seen


def test_qwen3_14b_weights_are_about_29_5_gb():
    n = QWEN3_14B.base_parameters()
    assert n == pytest.approx(14.8e9, rel=0.01)
    plan = memory_plan(QWEN3_14B)
    assert plan.base_parameter_count == n
    assert plan.persistent["base_weights"] == 2 * n
    assert plan.persistent["base_weights"] == pytest.approx(29.5e9, rel=0.02)
    # LoRA r=256 on all seven projections: r * (in + out) per projection and layer, about 1.03B parameters
    assert plan.lora_parameter_count == 40 * 256 * (2 * 10240 + 2 * 6144 + 3 * 22528)
    assert plan.persistent["lora_params"] + plan.persistent["lora_grads"] + plan.persistent["optimizer_state"] == (
        16 * plan.lora_parameter_count
    )


def test_shape_from_config_dict_and_object():
    assert ModelShape.from_config({**TINY, "model_type": "qwen3"}) == ModelShape(**TINY)
    config = Qwen3Config(**TINY)
    assert ModelShape.from_config(config) == ModelShape(**TINY)
    qwen3_14b_json = {
        "model_type": "qwen3",
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "intermediate_size": 17408,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
    }
    assert ModelShape.from_config(qwen3_14b_json) == QWEN3_14B
    llama = ModelShape.from_config({**TINY, "model_type": "llama", "head_dim": None})
    assert not llama.qk_norm and llama.head_dim == 16
    with pytest.raises(ValueError, match="vocab_size"):
        ModelShape.from_config({k: v for k, v in TINY.items() if k != "vocab_size"})


def test_parameter_counts_match_a_tiny_peft_model(tiny_lora):
    base_numel, lora = tiny_lora
    shape = ModelShape.from_config(lora.config)
    assert shape.base_parameters() == base_numel
    frozen = sum(p.numel() for p in lora.parameters() if not p.requires_grad)
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert shape.base_parameters() == frozen
    assert shape.lora_parameters(RANK) == sum(p.numel() for p in trainable)
    assert {p.dtype for p in trainable} == {torch.float32}  # peft upcasts the adapters: the plan's assumption


def test_judge_saved_activations_match_autograd(tiny_lora):
    """A frozen forward (adapter off) whose input embeddings require grad: what the judge's backward keeps."""
    _, lora = tiny_lora
    shape = ModelShape(**TINY)
    sequences, seq_len = 3, 20
    ids = torch.randint(0, TINY["vocab_size"], (sequences, seq_len))
    hooks, seen = _saved_bytes(lora)
    with lora.disable_adapter(), hooks:
        emb = lora.get_input_embeddings()(ids).detach().requires_grad_(True)
        lora.get_decoder()(inputs_embeds=emb, use_cache=False)
    measured, estimated = sum(seen.values()), judge_saved_bytes(shape, sequences, seq_len)
    print(f"judge saved activations: measured {measured} B, estimated {estimated} B")
    assert measured == pytest.approx(estimated, rel=0.05)


def test_player_saved_activations_match_autograd(tiny_lora):
    """The trainer's loss pass (shared prompt + cached moves, LoRA grads, reference pass, GRPO loss)."""
    from frost.losses import grpo_loss
    from frost.sampling import policy_distributions

    _, lora = tiny_lora
    shape = ModelShape(**TINY)
    prompt_tokens, k, length = 24, 4, 8
    gen = torch.Generator().manual_seed(1)
    prompt = tuple(torch.randint(0, TINY["vocab_size"], (prompt_tokens,), generator=gen).tolist())
    moves = torch.randint(0, TINY["vocab_size"], (k, length), generator=gen)
    hooks, seen = _saved_bytes(lora)
    lora.train()
    try:
        with hooks:
            policy = policy_distributions(lora, prompt, moves, temperature=1.0, forbidden=None)
            with torch.no_grad(), lora.disable_adapter():
                reference = policy_distributions(lora, prompt, moves, temperature=1.0, forbidden=None)
            grpo_loss(policy, reference, moves, torch.randn(k, generator=gen), 0.1)
    finally:
        lora.eval()
    parts = player_saved_bytes(shape, prompt_tokens=prompt_tokens, K=k, L=length, lora_rank=RANK)
    measured, estimated = sum(seen.values()), sum(parts.values())
    print(f"player saved activations: measured {measured} B, estimated {estimated} B ({parts})")
    assert measured == pytest.approx(estimated, rel=0.05)


def test_peak_grows_with_k_and_b():
    peaks_k = [memory_plan(K=k, D=k).peak for k in (1, 2, 4, 8, 16, 32, 64)]
    peaks_b = [memory_plan(B=b).peak for b in (1, 2, 4, 8)]
    assert peaks_k == sorted(peaks_k) and len(set(peaks_k)) == len(peaks_k)
    assert peaks_b == sorted(peaks_b) and len(set(peaks_b)) == len(peaks_b)


def test_gradient_checkpointing_and_micro_batching_lower_memory():
    full = memory_plan(B=4)
    gc = memory_plan(B=4, gradient_checkpointing=True)
    mb1 = memory_plan(B=4, micro_batch=1)
    for phase in ("judge", "player_loss"):
        assert gc.phases[phase]["activations"] < full.phases[phase]["activations"]
    assert gc.peak < full.peak
    assert mb1.peak < full.peak
    assert mb1.persistent == full.persistent
    # micro-batch 1: the transient memory no longer depends on B
    assert memory_plan(B=16, micro_batch=1).peak == mb1.peak
    assert memory_plan(B=4, micro_batch=4).peak == full.peak
    # chunked judge forwards and GQA k/v in the move pass only lower memory
    assert memory_plan(B=4, judge_batch_size=8).transient("judge") < full.transient("judge")
    assert memory_plan(B=4, expand_kv=False).transient("player_loss") < full.transient("player_loss")


def test_largest_fitting_is_consistent_with_the_plan():
    budget = 72e9
    report = largest_fitting(QWEN3_14B, budget_bytes=budget)
    for fit in (report.without_gc, report.with_gc):
        gc = fit.gradient_checkpointing
        assert fit.largest_K >= 1 and fit.largest_B >= 1
        assert memory_plan(K=fit.largest_K, D=fit.largest_K, B=4, gradient_checkpointing=gc).peak <= budget
        if fit.largest_K < 64:
            k2 = 2 * fit.largest_K
            assert memory_plan(K=k2, D=k2, B=4, gradient_checkpointing=gc).peak > budget
        assert memory_plan(K=8, D=8, B=fit.largest_B, gradient_checkpointing=gc).peak <= budget
        if not fit.B_capped:
            assert memory_plan(K=8, D=8, B=fit.largest_B + 1, gradient_checkpointing=gc).peak > budget
    assert report.with_gc.largest_K >= report.without_gc.largest_K
    assert report.with_gc.largest_B >= report.without_gc.largest_B
    assert largest_fitting(QWEN3_14B, budget_bytes=1e9).without_gc.largest_K == 0


def test_plan_markdown_has_the_tables():
    text = plan_markdown()
    assert "| phase | component | GiB |" in text
    assert "| persistent | base weights" in text
    assert "### Peak per phase" in text
    assert "### Largest K and B that fit" in text
    assert "### Assumptions" in text
    plan = memory_plan()
    assert f"{plan.persistent['base_weights'] / 2**30:.2f}" in text  # computed, not hard-coded
    assert f"**{plan.peak / 2**30:.2f}**" in text


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="K"):
        memory_plan(K=0)
    with pytest.raises(ValueError, match="micro_batch"):
        memory_plan(micro_batch=0)
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        QWEN3_14B.lora_parameters(8, ["qkv"])


def test_fsdp_shards_split_only_the_decoder_layers():
    whole, sharded = memory_plan(QWEN3_14B), memory_plan(QWEN3_14B, fsdp_shards=8)
    layers = QWEN3_14B.num_hidden_layers * QWEN3_14B.block_parameters()
    kept = QWEN3_14B.base_parameters() - layers  # embeddings, LM head, final norm: whole on every rank
    assert kept == 2 * QWEN3_14B.vocab_size * QWEN3_14B.hidden_size + QWEN3_14B.hidden_size
    assert sharded.persistent["base_weights"] == 2 * (kept + layers // 8)
    assert sharded.persistent["fsdp_gathered_layers"] == 2 * 2 * QWEN3_14B.block_parameters()
    assert whole.persistent["base_weights"] - sharded.persistent["base_weights"] > 20 * 2**30  # 14B: ~22 GiB saved
    assert sharded.phases == whole.phases and sharded.base_parameter_count == whole.base_parameter_count


def test_a_static_decode_keeps_one_cache_of_the_rounded_length():
    from frost.decode import cache_length
    from frost.run.memplan import kv_cache_bytes

    plan = memory_plan(QWEN3_14B, K=8, B=4, prompt_tokens=200, L=8, static_decode=True)
    rows, length = 4 * 8, cache_length(200, 8)
    assert length == 256
    assert plan.persistent["decode_static_cache"] == kv_cache_bytes(QWEN3_14B, rows * length, dtype_bytes=2)
    # per token and layer: keys and values of 8 KV heads x 128 dims in bf16
    assert plan.persistent["decode_static_cache"] == rows * length * 40 * 2 * 8 * 128 * 2
