"""GPU memory plan of one Frost-GRPO training step: arithmetic only, no model is loaded and torch is not imported.

A step (see `frost.run.trainer`) runs five phases one after another; each frees its memory before the next starts:

1. sampling: the prompt (P tokens) is prefilled once, its KV cache repeated for the K moves, L decode steps;
   the player's sampling distributions [K, L, V] (float32) are kept for the rest of the step;
2. judge: one forward+backward over the K parents (sequences of `judge_tokens`), the gradient taken with respect
   to the input embeddings only (the judge is the frozen base: no weight gradients), the full-vocabulary softmax at
   every scored position;
3. children: exact scoring of the D Frost candidates (forward only);
4. player loss: the prompt encoded once with autograd and the K moves continued from its (repeated) KV cache, LoRA
   gradients; plus a reference pass with the adapter off (no grad) giving full-vocabulary log-probabilities at the
   K*L move positions for the KL;
5. AdamW step on the LoRA parameters.

The peak is the persistent memory (bf16 base weights shared by player, judge and reference; LoRA parameters,
gradients and AdamW moments) plus the largest transient memory of a phase.

The saved-activation formulas (`block_saved_bytes`, `judge_saved_bytes`, `player_saved_bytes`) follow what autograd
actually keeps for a transformers Qwen3 decoder (SDPA attention) wrapped by peft LoRA with float32 adapters; on a
tiny Qwen3 on the CPU they match the bytes counted with `torch.autograd.graph.saved_tensors_hooks` to within 0.1%
(tests/test_memplan.py). The working sets of inference passes and of the backward sweep are rougher estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from frost.shapes import LORA_TARGETS, QWEN3_14B, ModelShape

GIB = 2**30
"""Bytes in a GiB (what the tables show)."""
FP32 = 4
"""Bytes of a float32: RMSNorm statistics, softmax and log-softmax over the vocabulary, LoRA adapters and AdamW."""
PLAYER_LOGIT_SAVED_BYTES = 3 * FP32 + 1
"""Per entry of the player's [K, L, V] distributions, kept for the backward: the float32 log-softmax output, the
probabilities exp(log pi) and the difference log pi - log pi_ref of the full KL, and the boolean `p > 0` mask."""
PLAYER_LOGIT_BACKWARD_BYTES = 3 * FP32
"""Per entry of the player's [K, L, V] distributions, gradient buffers alive while the loss is back-propagated."""
GPU_BYTES = 80e9
"""One 80 GB GPU (an H100 80GB reports 79.6 GiB = 85.5e9 bytes; 80e9 is the conservative reading)."""
HEADROOM = 0.10
"""Fraction of the GPU kept free: CUDA context, cuBLAS workspaces, allocator fragmentation."""


def block_saved_bytes(
    shape: ModelShape,
    *,
    lora_rank: int = 0,
    targets: Sequence[str] = LORA_TARGETS,
    dtype_bytes: int = 2,
    lora_bytes: int = FP32,
    with_kv: bool = True,
) -> dict[str, int]:
    """Bytes autograd keeps per token for one decoder block whose base weights are frozen, by part.

    - rmsnorm: each of the two RMSNorms keeps its float32 input copy and its float32 1/rms;
    - qk_norm: the same for the per-head query and key norms (Qwen3);
    - attention: SDPA (flash / memory-efficient, O(T) memory) keeps q, k, v, its output and a float32 logsumexp
      per head; `with_kv=False` leaves k and v out (a cached pass keeps them per context token instead);
    - mlp: the gate output (SiLU input), the SiLU output and the up output, `intermediate_size` each;
    - lora_inputs: peft casts each projection's input to the adapter dtype (float32) and lora_A keeps that copy;
    - lora_intermediates: lora_B keeps lora_A's output, `lora_rank` per projection.

    A frozen base projection keeps only its weight (already counted), not its input. Without LoRA (`lora_rank=0`,
    e.g. the judge) the lora parts are zero.
    """
    h, d = shape.hidden_size, dtype_bytes
    parts = {
        "rmsnorm": 2 * (FP32 * h + FP32),
        "qk_norm": (
            FP32 * (shape.q_dim + shape.kv_dim) + FP32 * (shape.num_attention_heads + shape.num_key_value_heads)
        )
        if shape.qk_norm
        else 0,
        "attention": d * 2 * shape.q_dim + FP32 * shape.num_attention_heads + (d * 2 * shape.kv_dim if with_kv else 0),
        "mlp": 3 * d * shape.intermediate_size,
        "lora_inputs": 0,
        "lora_intermediates": 0,
    }
    if lora_rank:
        shapes = shape.linear_shapes()
        parts["lora_inputs"] = lora_bytes * sum(shapes[t][0] for t in targets)
        parts["lora_intermediates"] = lora_bytes * lora_rank * len(targets)
    return parts


def _rope_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> int:
    """The rotary cos and sin tables one forward shares across its layers."""
    return 2 * dtype_bytes * shape.head_dim * tokens


def judge_saved_bytes(shape: ModelShape, sequences: int, seq_len: int, *, dtype_bytes: int = 2) -> int:
    """Bytes autograd keeps for a frozen-model forward over `sequences` sequences of `seq_len` tokens whose input
    embeddings require grad: every block (no LoRA), the final RMSNorm, and the rotary tables (one per position,
    shared by the sequences and the layers)."""
    block = sum(block_saved_bytes(shape, dtype_bytes=dtype_bytes).values())
    final_norm = FP32 * shape.hidden_size + FP32
    return sequences * seq_len * (shape.num_hidden_layers * block + final_norm) + _rope_bytes(
        shape, seq_len, dtype_bytes
    )


def player_saved_bytes(
    shape: ModelShape,
    *,
    prompt_tokens: int,
    K: int,
    L: int,
    lora_rank: int,
    texts: int = 1,
    targets: Sequence[str] = LORA_TARGETS,
    dtype_bytes: int = 2,
    lora_bytes: int = FP32,
    expand_kv: bool = True,
) -> dict[str, int]:
    """Bytes autograd keeps for the player's loss pass (`frost.run.trainer.policy_distributions`), by part.

    Per text: the prompt (P tokens, batch 1) runs through the LoRA model with autograd; its KV cache is repeated K
    times and the K moves' first L-1 tokens continue from it. The move pass has an attention mask (queries do not
    start at position 0), so transformers' SDPA path repeats k and v to all heads (`repeat_kv`, `expand_kv=True`)
    and SDPA keeps those expanded k, v for all K*(P+L-1) context tokens, plus the additive mask, in every layer.
    The embedding output does not require grad, so the first RMSNorm keeps nothing; the final one does (same size).

    The `logits` part is the [K, L, V] float32 distributions' tensors kept for the loss's backward
    (`PLAYER_LOGIT_SAVED_BYTES` per entry).
    """
    d, layers = dtype_bytes, shape.num_hidden_layers
    moves = K * (L - 1)
    context = prompt_tokens + L - 1

    def block(with_kv: bool) -> int:
        parts = block_saved_bytes(
            shape, lora_rank=lora_rank, targets=targets, dtype_bytes=d, lora_bytes=lora_bytes, with_kv=with_kv
        )
        return sum(parts.values())

    prompt = prompt_tokens * layers * block(True) + _rope_bytes(shape, prompt_tokens, d)
    move_blocks = moves * layers * block(False) + _rope_bytes(shape, L - 1, d) if moves else 0
    kv_width = shape.q_dim if expand_kv else shape.kv_dim
    move_kv = layers * K * context * 2 * kv_width * d if moves else 0
    move_mask = layers * K * (L - 1) * context * d if moves else 0
    return {
        "prompt": texts * prompt,
        "moves": texts * move_blocks,
        "move_attention_kv": texts * (move_kv + move_mask),
        "logits": texts * K * L * shape.vocab_size * PLAYER_LOGIT_SAVED_BYTES,
    }


def kv_cache_bytes(shape: ModelShape, tokens: int, *, dtype_bytes: int = 2) -> int:
    """A KV cache of `tokens` tokens: 2 * layers * kv_heads * head_dim * tokens * bytes."""
    return 2 * shape.num_hidden_layers * shape.kv_dim * tokens * dtype_bytes


def forward_working_bytes(shape: ModelShape, tokens: int, *, dtype_bytes: int = 2, lora: bool = False) -> int:
    """Rough live memory inside one block of an inference forward (layers run one at a time and free their
    tensors): the residual and normed hidden states, float32 RMSNorm temporaries, and the MLP's gate/up/SiLU/product
    tensors; with an active LoRA adapter also the float32 input cast and float32 sum of the widest projection."""
    h, i = shape.hidden_size, shape.intermediate_size
    per_token = dtype_bytes * (2 * h + 3 * i) + 2 * FP32 * h
    if lora:
        per_token += FP32 * (i + h)
    return tokens * per_token


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class MemoryPlan:
    """Named byte estimates of one training step: persistent memory and each phase's transient memory."""

    shape: ModelShape
    settings: dict[str, Any]
    base_parameter_count: int
    lora_parameter_count: int
    persistent: dict[str, int]
    """base_weights (this rank's: its shards under FSDP), lora_params, lora_grads, optimizer_state; under FSDP
    fsdp_gathered_layers; with a static decode, decode_static_cache."""
    phases: dict[str, dict[str, int]]
    """Phase name -> its transient components (bytes), in execution order."""

    @property
    def persistent_bytes(self) -> int:
        """Memory held for the whole step (weights, LoRA and optimizer state), in bytes."""
        return sum(self.persistent.values())

    def transient(self, phase: str) -> int:
        """A phase's transient memory (bytes)."""
        return sum(self.phases[phase].values())

    @property
    def phase_peaks(self) -> dict[str, int]:
        """Persistent + transient memory of each phase (bytes)."""
        return {name: self.persistent_bytes + self.transient(name) for name in self.phases}

    @property
    def peak_phase(self) -> str:
        """The phase whose persistent + transient memory is the largest."""
        peaks = self.phase_peaks
        return max(peaks, key=lambda name: peaks[name])

    @property
    def peak(self) -> int:
        """Weights + LoRA state + the largest phase's transient memory (bytes)."""
        return self.phase_peaks[self.peak_phase]

    def components(self) -> dict[str, int]:
        """Every estimate, flattened: `persistent/<name>` and `<phase>/<name>` (bytes)."""
        out = {f"persistent/{k}": v for k, v in self.persistent.items()}
        for phase, parts in self.phases.items():
            out.update({f"{phase}/{k}": v for k, v in parts.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready dicts (settings, shape, every component, each phase's peak)."""
        return {
            "settings": dict(self.settings),
            "base_parameter_count": self.base_parameter_count,
            "lora_parameter_count": self.lora_parameter_count,
            "components": self.components(),
            "phase_peaks": self.phase_peaks,
            "peak": self.peak,
            "peak_phase": self.peak_phase,
        }


@dataclass(frozen=True)
class _PlanSettings:
    """`memory_plan`'s keywords (its docstring says what each means), in the order `MemoryPlan.settings` lists them,
    and the sizes the phases derive from them."""

    lora_rank: int
    K: int
    L: int
    prompt_tokens: int
    judge_tokens: int
    B: int
    D: int
    dtype_bytes: int
    gradient_checkpointing: bool
    micro_batch: int | None
    optimizer_bytes_per_param: int
    lora_param_bytes: int
    lora_grad_bytes: int
    optimizer_temp_bytes_per_param: int
    judge_batch_size: int | None
    expand_kv: bool
    targets: tuple[str, ...]
    fsdp_shards: int
    static_decode: bool

    def as_dict(self) -> dict[str, Any]:
        """The settings as `MemoryPlan.settings` records them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def texts(self) -> int:
        """Texts run together in each phase: B, or the micro-batch."""
        return self.B if self.micro_batch is None else min(self.micro_batch, self.B)

    def judge_chunk(self, sequences: int) -> int:
        """Sequences per judge forward when `sequences` are to be scored (capped by `judge_batch_size`)."""
        return sequences if self.judge_batch_size is None else min(self.judge_batch_size, sequences)

    def check_sizes(self) -> None:
        """Raise ValueError for a size out of range (`fsdp_shards` is checked with the persistent memory)."""
        for name in ("lora_rank", "K", "L", "prompt_tokens"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("judge_tokens", "B", "D"):
            value = getattr(self, name)
            if value < 0 or (name == "B" and value < 1):
                raise ValueError(f"{name} must be >= {1 if name == 'B' else 0}, got {value}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1 or None, got {self.micro_batch}")
        if self.judge_batch_size is not None and self.judge_batch_size < 1:
            raise ValueError(f"judge_batch_size must be >= 1 or None, got {self.judge_batch_size}")


def _move_distribution_entries(shape: ModelShape, s: _PlanSettings) -> int:
    """Entries of the [K, L, V] distributions over the moves of the texts run together."""
    return s.texts * s.K * s.L * shape.vocab_size


def _sampled_distributions_bytes(shape: ModelShape, s: _PlanSettings) -> int:
    """The player's float32 sampling distributions, kept from phase 1 to the loss."""
    return _move_distribution_entries(shape, s) * FP32


def _move_kv_cache_bytes(shape: ModelShape, s: _PlanSettings) -> int:
    """The KV cache of the K moves over the prompt (P + L tokens each) of the texts run together."""
    return kv_cache_bytes(shape, s.texts * s.K * (s.prompt_tokens + s.L), dtype_bytes=s.dtype_bytes)


def _persistent_terms(shape: ModelShape, s: _PlanSettings, n_lora: int) -> dict[str, int]:
    """Memory held for the whole run: this rank's base weights, the LoRA parameters, gradients and AdamW moments;
    under FSDP the two gathered layers; with a static decode its KV cache."""
    if s.fsdp_shards < 1:
        raise ValueError(f"fsdp_shards must be >= 1, got {s.fsdp_shards}")
    d = s.dtype_bytes
    n_layers = shape.num_hidden_layers * shape.block_parameters()
    n_base = shape.base_parameters() - n_layers + -(-n_layers // s.fsdp_shards)
    persistent = {
        "base_weights": n_base * d,
        "lora_params": n_lora * s.lora_param_bytes,
        "lora_grads": n_lora * s.lora_grad_bytes,
        "optimizer_state": n_lora * s.optimizer_bytes_per_param,
    }
    if s.fsdp_shards > 1:
        persistent["fsdp_gathered_layers"] = 2 * shape.block_parameters() * d
    if s.static_decode:
        from frost.decode import cache_length

        persistent["decode_static_cache"] = kv_cache_bytes(
            shape, s.texts * s.K * cache_length(s.prompt_tokens, s.L), dtype_bytes=d
        )
    return persistent


def _sampling_terms(shape: ModelShape, s: _PlanSettings) -> dict[str, int]:
    """Phase 1: prompt prefill, the KV cache of the K moves, and the decode's distributions."""
    return {
        "kv_cache": _move_kv_cache_bytes(shape, s),
        "prefill_working": forward_working_bytes(
            shape, s.texts * s.prompt_tokens, dtype_bytes=s.dtype_bytes, lora=True
        ),
        "sampled_distributions": _sampled_distributions_bytes(shape, s),
        "decode_logits": 3 * s.texts * s.K * shape.vocab_size * FP32,
    }


def _judge_terms(shape: ModelShape, s: _PlanSettings) -> dict[str, int]:
    """Phase 2: the judge's forward + backward to the input embeddings, over one chunk of parent sequences."""
    d, h, v = s.dtype_bytes, shape.hidden_size, shape.vocab_size
    judge_seqs = s.judge_chunk(s.texts * s.K)
    judge_tok = judge_seqs * s.judge_tokens
    judge_block = sum(block_saved_bytes(shape, dtype_bytes=d).values())
    if s.gradient_checkpointing:
        judge_acts = judge_tok * (shape.num_hidden_layers * d * h + judge_block)
    else:
        judge_acts = judge_saved_bytes(shape, judge_seqs, s.judge_tokens, dtype_bytes=d)
    return {
        "sampled_distributions": _sampled_distributions_bytes(shape, s),
        "activations": judge_acts,
        # bf16 logits (autograd's output), their float32 copy, the float32 softmax gradient and its bf16 cast
        "logits": judge_tok * v * (d + FP32 + FP32 + d),
        "backward_working": judge_tok * (judge_block + 2 * d * h),
        # judge log-probs at the move positions, embedding gradients
        "outputs": s.texts * s.K * s.L * (v + h) * FP32,
    }


def _children_terms(shape: ModelShape, s: _PlanSettings) -> dict[str, int]:
    """Phase 3: exact scoring of the D candidates per text, forward only."""
    child_tok = s.judge_chunk(s.texts * s.D) * s.judge_tokens if s.D else 0
    return {
        "sampled_distributions": _sampled_distributions_bytes(shape, s),
        "judge_outputs": _move_distribution_entries(shape, s) * FP32,
        "forward_working": forward_working_bytes(shape, child_tok, dtype_bytes=s.dtype_bytes),
        # bf16 logits, float32 copy, logsumexp temporary
        "logits": child_tok * shape.vocab_size * (s.dtype_bytes + FP32 + FP32),
    }


def _reference_forward_bytes(shape: ModelShape, s: _PlanSettings) -> int:
    """Working memory of the reference pass (adapter off, no grad): its KV cache, one block's working set and the
    bf16 logits with their float32 log-softmax at the move positions."""
    return (
        _move_kv_cache_bytes(shape, s)
        + forward_working_bytes(shape, s.texts * max(s.prompt_tokens, s.K * s.L), dtype_bytes=s.dtype_bytes)
        + _move_distribution_entries(shape, s) * (s.dtype_bytes + FP32)
    )


def _player_loss_terms(shape: ModelShape, s: _PlanSettings) -> dict[str, int]:
    """Phase 4: the player's loss pass (with LoRA gradients) and the reference pass (adapter off, no grad)."""
    d, h, layers = s.dtype_bytes, shape.hidden_size, shape.num_hidden_layers
    saved = player_saved_bytes(
        shape,
        prompt_tokens=s.prompt_tokens,
        K=s.K,
        L=s.L,
        lora_rank=s.lora_rank,
        texts=s.texts,
        targets=s.targets,
        dtype_bytes=d,
        lora_bytes=s.lora_param_bytes,
        expand_kv=s.expand_kv,
    )
    player_tok = s.texts * (s.prompt_tokens + s.K * (s.L - 1))
    lora_block = sum(
        block_saved_bytes(
            shape, lora_rank=s.lora_rank, targets=s.targets, dtype_bytes=d, lora_bytes=s.lora_param_bytes
        ).values()
    )
    per_layer_kv = saved["move_attention_kv"] // layers
    entries = _move_distribution_entries(shape, s)
    if s.gradient_checkpointing:
        acts = player_tok * (layers * d * h + lora_block) + per_layer_kv
        kv_acts = 0
    else:
        acts = saved["prompt"] + saved["moves"]
        kv_acts = saved["move_attention_kv"]
    backward = player_tok * (lora_block + 2 * d * h) + per_layer_kv + entries * PLAYER_LOGIT_BACKWARD_BYTES
    return {
        "sampled_distributions": _sampled_distributions_bytes(shape, s),
        "activations": acts,
        "move_attention_kv": kv_acts,
        "prompt_kv_cache": _move_kv_cache_bytes(shape, s),
        "logits": saved["logits"],
        "reference_logprobs": entries * FP32,
        "reference_forward_or_backward_working": max(_reference_forward_bytes(shape, s), backward),
    }


def memory_plan(
    shape: ModelShape = QWEN3_14B,
    *,
    lora_rank: int = 256,
    K: int = 8,
    L: int = 8,
    prompt_tokens: int = 200,
    judge_tokens: int = 80,
    B: int = 4,
    D: int = 8,
    dtype_bytes: int = 2,
    gradient_checkpointing: bool = False,
    micro_batch: int | None = None,
    optimizer_bytes_per_param: int = 2 * FP32,
    lora_param_bytes: int = FP32,
    lora_grad_bytes: int = FP32,
    optimizer_temp_bytes_per_param: int = FP32,
    judge_batch_size: int | None = None,
    expand_kv: bool = True,
    targets: Sequence[str] = LORA_TARGETS,
    fsdp_shards: int = 1,
    static_decode: bool = False,
) -> MemoryPlan:
    """Estimate the memory of one Frost-GRPO step.

    Assumptions:

    - base weights in `dtype_bytes` (bf16: 2) are loaded once; judge and reference are the same weights with the
      adapter off;
    - LoRA parameters are float32 (peft's `get_peft_model` upcasts adapters by default), with float32 gradients and
      AdamW's two float32 moments: 4 + 4 + 8 = 16 bytes per LoRA parameter, all held for the whole run (the
      gradients from the first backward to the optimizer step); the foreach AdamW step adds one float32 temporary
      per parameter (`optimizer_temp_bytes_per_param`);
    - `micro_batch=None` runs all B texts of a step together in each phase; `micro_batch=m` runs m texts at a time
      (gradients accumulate in the persistent LoRA gradients), so transient memory scales with m instead of B
      (`frost.run.trainer.Trainer` handles one text at a time: micro_batch=1);
    - the judge's logits cover all `judge_tokens` positions of each sequence (an upper bound: only the move and the
      end are scored); `judge_batch_size` caps the sequences per judge forward (None: all at once);
    - with gradient checkpointing, the judge and the player keep one hidden state per layer and token, and recompute
      one block's full activations during the backward; the player's repeated prompt KV cache stays alive;
    - the backward sweep's working set is one block's saved activations plus two hidden-state gradients per token;
    - `fsdp_shards=N` (`frost.run.fsdp`): each rank holds 1/N of every decoder layer's weights (embeddings, head and
      LoRA whole) and gathers two layers whole at a time (the one running and the next, prefetched);
    - `static_decode` (`frost.decode`, CUDA's default): a static KV cache of B*K rows (micro-batch*K) over the prompt
      and move rounded up to 64 positions is kept for the run, so its capture can be replayed every step.
    """
    s = _PlanSettings(
        lora_rank=lora_rank,
        K=K,
        L=L,
        prompt_tokens=prompt_tokens,
        judge_tokens=judge_tokens,
        B=B,
        D=D,
        dtype_bytes=dtype_bytes,
        gradient_checkpointing=gradient_checkpointing,
        micro_batch=micro_batch,
        optimizer_bytes_per_param=optimizer_bytes_per_param,
        lora_param_bytes=lora_param_bytes,
        lora_grad_bytes=lora_grad_bytes,
        optimizer_temp_bytes_per_param=optimizer_temp_bytes_per_param,
        judge_batch_size=judge_batch_size,
        expand_kv=expand_kv,
        targets=tuple(targets),
        fsdp_shards=fsdp_shards,
        static_decode=static_decode,
    )
    s.check_sizes()
    n_lora = shape.lora_parameters(lora_rank, s.targets)
    return MemoryPlan(
        shape=shape,
        settings=s.as_dict(),
        base_parameter_count=shape.base_parameters(),
        lora_parameter_count=n_lora,
        persistent=_persistent_terms(shape, s, n_lora),
        phases={
            "sampling": _sampling_terms(shape, s),
            "judge": _judge_terms(shape, s),
            "children": _children_terms(shape, s),
            "player_loss": _player_loss_terms(shape, s),
            "optimizer": {"adamw_temporaries": n_lora * optimizer_temp_bytes_per_param},  # 5. AdamW step
        },
    )


# ------------------------------------------------------------------------------------------- what fits


@dataclass(frozen=True)
class Fit:
    """The largest K and B that fit, for one gradient-checkpointing setting."""

    gradient_checkpointing: bool
    largest_K: int
    """Largest power of two K <= max_K that fits at the given B (0: none)."""
    largest_B: int
    """Largest B <= max_B that fits at the given K (0: none)."""
    B_capped: bool
    """True when B = max_B still fits (memory then does not limit B)."""


@dataclass(frozen=True)
class FitReport:
    """The largest K and B whose peak fits a memory budget, without and with gradient checkpointing."""

    budget_bytes: float
    at_B: int
    """The B at which K is searched."""
    at_K: int
    """The K at which B is searched."""
    without_gc: Fit
    with_gc: Fit


def _budget(budget_bytes: float | None, gpu_bytes: float, headroom: float) -> float:
    if budget_bytes is not None:
        return budget_bytes
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must lie in [0, 1), got {headroom}")
    return gpu_bytes * (1 - headroom)


def largest_fitting(
    shape: ModelShape = QWEN3_14B,
    *,
    budget_bytes: float | None = None,
    gpu_bytes: float = GPU_BYTES,
    headroom: float = HEADROOM,
    K: int = 8,
    B: int = 4,
    D: int | None = None,
    max_K: int = 64,
    max_B: int = 64,
    **plan_kwargs: Any,
) -> FitReport:
    """The largest K (powers of two up to `max_K`, at B) and the largest B (up to `max_B`, at K) whose peak fits in
    `budget_bytes` (default: `gpu_bytes * (1 - headroom)`), without and with gradient checkpointing.

    `D=None` ties the children budget to K (D = K, the paper); other keywords go to `memory_plan`.
    """
    budget = _budget(budget_bytes, gpu_bytes, headroom)
    plan_kwargs.pop("gradient_checkpointing", None)
    ks = [2**e for e in range(int(math.log2(max_K)) + 1)]

    def fits(k: int, b: int, gc: bool) -> bool:
        plan = memory_plan(shape, K=k, B=b, D=k if D is None else D, gradient_checkpointing=gc, **plan_kwargs)
        return plan.peak <= budget

    def fit(gc: bool) -> Fit:
        largest_k = max((k for k in ks if fits(k, B, gc)), default=0)
        largest_b = 0
        for b in range(1, max_B + 1):  # the peak grows with B, so stop at the first that does not fit
            if not fits(K, b, gc):
                break
            largest_b = b
        return Fit(gradient_checkpointing=gc, largest_K=largest_k, largest_B=largest_b, B_capped=largest_b == max_B)

    return FitReport(budget_bytes=budget, at_B=B, at_K=K, without_gc=fit(False), with_gc=fit(True))


# ------------------------------------------------------------------------------------------------ Markdown


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


_PHASE_TITLES = {
    "sampling": "1. sampling",
    "judge": "2. judge fwd+bwd",
    "children": "3. children scoring",
    "player_loss": "4. player loss + reference",
    "optimizer": "5. AdamW step",
}


def _plan_variants(shape: ModelShape, base_kwargs: dict[str, Any]) -> dict[str, MemoryPlan]:
    """The four plans the peaks table compares: with and without micro-batching and gradient checkpointing."""
    return {
        "all B texts together": memory_plan(shape, **base_kwargs),
        "micro-batch 1": memory_plan(shape, micro_batch=1, **base_kwargs),
        "grad. checkpointing": memory_plan(shape, gradient_checkpointing=True, **base_kwargs),
        "GC + micro-batch 1": memory_plan(shape, gradient_checkpointing=True, micro_batch=1, **base_kwargs),
    }


def _intro_lines(plan: MemoryPlan, gpu_bytes: float, headroom: float, budget: float) -> list[str]:
    """The section's title and the paragraph stating the step's setting and the budget."""
    s = plan.settings
    return [
        f"## GPU memory plan: Frost-GRPO on {plan.shape.name}",
        "",
        f"One step at K={s['K']} moves of L={s['L']} tokens, B={s['B']} texts, a {s['prompt_tokens']}-token prompt, "
        f"{s['judge_tokens']}-token judge sequences, D={s['D']} children, LoRA r={s['lora_rank']} on "
        f"{', '.join(t.removesuffix('_proj') for t in s['targets'])}; base weights in {8 * s['dtype_bytes']}-bit, "
        f"LoRA in float32 with AdamW. Budget: {gpu_bytes / 1e9:.0f} GB x {1 - headroom:.2f} = "
        f"{budget / 1e9:.1f} GB ({_gib(budget)} GiB). All numbers are computed by `frost.run.memplan`.",
    ]


def _components_table(plan: MemoryPlan) -> list[str]:
    """The table of the plan's persistent and per-phase components (GiB), zero components left out."""
    s = plan.settings
    mode = "all B texts together" if s["micro_batch"] is None else f"micro-batch {s['micro_batch']}"
    mode += ", gradient checkpointing" if s["gradient_checkpointing"] else ", no gradient checkpointing"
    lines = [
        "",
        f"### Components ({mode})",
        "",
        "| phase | component | GiB |",
        "|---|---|---:|",
    ]
    lines.append(
        f"| persistent | base weights ({plan.base_parameter_count / 1e9:.2f}B params) | "
        f"{_gib(plan.persistent['base_weights'])} |"
    )
    lines.append(
        f"| persistent | LoRA params ({plan.lora_parameter_count / 1e9:.3f}B, float32) | "
        f"{_gib(plan.persistent['lora_params'])} |"
    )
    lines.append(f"| persistent | LoRA grads (float32) | {_gib(plan.persistent['lora_grads'])} |")
    lines.append(f"| persistent | AdamW moments (2 x float32) | {_gib(plan.persistent['optimizer_state'])} |")
    lines.append(f"| persistent | **total** | **{_gib(plan.persistent_bytes)}** |")
    for phase, parts in plan.phases.items():
        for name, value in parts.items():
            if value:
                lines.append(f"| {_PHASE_TITLES[phase]} | {name.replace('_', ' ')} | {_gib(value)} |")
        lines.append(f"| {_PHASE_TITLES[phase]} | **transient** | **{_gib(plan.transient(phase))}** |")
    return lines


def _peaks_table(plan: MemoryPlan, variants: dict[str, MemoryPlan], budget: float) -> list[str]:
    """The table of each phase's peak (GiB) under each variant, the step's peak, and whether it fits the budget."""
    lines = [
        "",
        "### Peak per phase (GiB: persistent + that phase's transient memory)",
        "",
        "| phase | " + " | ".join(variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for phase in plan.phases:
        row = [_gib(p.phase_peaks[phase]) for p in variants.values()]
        lines.append(f"| {_PHASE_TITLES[phase]} | " + " | ".join(row) + " |")
    lines.append("| **peak** | " + " | ".join(f"**{_gib(p.peak)}**" for p in variants.values()) + " |")
    lines.append(
        "| fits the budget | " + " | ".join("yes" if p.peak <= budget else "no" for p in variants.values()) + " |"
    )
    return lines


def _savings_lines(plan: MemoryPlan, variants: dict[str, MemoryPlan], base_kwargs: dict[str, Any]) -> list[str]:
    """The bullets on what gradient checkpointing, micro-batching and (where it helps) GQA k/v in the move pass
    save."""
    s, shape = plan.settings, plan.shape
    full, mb1 = variants["all B texts together"], variants["micro-batch 1"]
    gc, gc1 = variants["grad. checkpointing"], variants["GC + micro-batch 1"]
    acts = full.phases["player_loss"]["activations"] + full.phases["player_loss"]["move_attention_kv"]
    acts_gc = gc.phases["player_loss"]["activations"] + gc.phases["player_loss"]["move_attention_kv"]
    judge_acts = (full.phases["judge"]["activations"], gc.phases["judge"]["activations"])
    biggest = sorted(full.phases[full.peak_phase].items(), key=lambda kv: -kv[1])[:3]
    top = ", ".join(f"{name.replace('_', ' ')} {_gib(value)} GiB" for name, value in biggest)
    lines = [
        "",
        "### What gradient checkpointing and micro-batching buy",
        "",
        f"- Without either, the peak is in phase {_PHASE_TITLES[full.peak_phase]!r}; its largest parts: {top}.",
        f"- Gradient checkpointing cuts the judge's saved activations from {_gib(judge_acts[0])} to "
        f"{_gib(judge_acts[1])} GiB and the player's (with its move-pass k/v) from {_gib(acts)} to {_gib(acts_gc)} "
        f"GiB; the peak drops from {_gib(full.peak)} to {_gib(gc.peak)} GiB ({_gib(full.peak - gc.peak)} GiB less), "
        "at the cost of a second forward in each backward.",
        f"- Micro-batching one text at a time (what `frost.run.trainer` does) lowers the peak to {_gib(mb1.peak)} GiB "
        f"({_gib(full.peak - mb1.peak)} GiB less) with the same FLOPs "
        f"(smaller GEMMs); with both, {_gib(gc1.peak)} GiB.",
        f"- The persistent part ({_gib(full.persistent_bytes)} GiB) does not shrink: the LoRA state alone is "
        f"{_gib(full.persistent_bytes - full.persistent['base_weights'])} GiB at r={s['lora_rank']} "
        f"({plan.lora_parameter_count / 1e9:.2f}B float32 parameters with gradients and two moments).",
    ]
    gqa = memory_plan(shape, **{**base_kwargs, "expand_kv": False})
    expand_kv_saving = full.phases["player_loss"]["move_attention_kv"] - gqa.phases["player_loss"]["move_attention_kv"]
    if expand_kv_saving > 0:
        lines.append(
            f"- Keeping k/v at {shape.num_key_value_heads} heads in the move pass (GQA inside SDPA instead of "
            f"`repeat_kv`) would save a further {_gib(expand_kv_saving)} GiB at B={s['B']}."
        )
    return lines


def _fit_table(plan: MemoryPlan, budget: float, max_K: int, max_B: int, base_kwargs: dict[str, Any]) -> list[str]:
    """The table of the largest K (at the plan's B) and B (at its K) that fit the budget, with D = K, with and
    without micro-batching and gradient checkpointing."""
    s = plan.settings
    fit_kwargs = {k: v for k, v in base_kwargs.items() if k not in ("K", "B", "D")}
    k_at, b_at = s["K"], s["B"]
    lines = [
        "",
        f"### Largest K and B that fit ({_gib(budget)} GiB budget; D = K)",
        "",
        f"| setting | largest K (B={b_at}) | largest B (K={k_at}) |",
        "|---|---:|---:|",
    ]
    for label, mb in (("all B texts together", None), ("micro-batch 1", 1)):
        report = largest_fitting(
            plan.shape, budget_bytes=budget, K=k_at, B=b_at, max_K=max_K, max_B=max_B, micro_batch=mb, **fit_kwargs
        )
        for f in (report.without_gc, report.with_gc):
            b_text = f">= {f.largest_B} (does not grow with B)" if f.B_capped else str(f.largest_B)
            gc_text = "gradient checkpointing" if f.gradient_checkpointing else "no checkpointing"
            lines.append(f"| {label}, {gc_text} | {f.largest_K or 'none'} | {b_text} |")
    return lines


def _assumption_lines(gpu_bytes: float, headroom: float) -> list[str]:
    """The bullets stating what the plan assumes."""
    return [
        "",
        "### Assumptions",
        "",
        "- Judge and KL reference are the player's bf16 base weights with the adapter off: one copy of the weights.",
        "- LoRA adapters are float32 (peft's default upcast) with float32 gradients and AdamW's two float32 moments "
        "(16 bytes per LoRA parameter), held for the whole run; the AdamW step adds one float32 temporary per "
        "parameter.",
        "- Saved activations are what autograd keeps for a transformers Qwen3 block with SDPA (O(T) attention "
        "memory) and frozen base weights: float32 RMSNorm inputs, q/k/v/output, the MLP's gate, SiLU and up "
        "outputs, and with LoRA the float32 input copy and rank-r intermediate of every adapted projection "
        "(within 0.1% of `saved_tensors_hooks` counts on a tiny Qwen3 on the CPU).",
        "- The player's cached move pass has an attention mask, so SDPA keeps k/v repeated to all heads for all "
        "K*(P+L) context tokens in every layer.",
        "- Logits: player and reference [K, L, V] in float32 (log-softmax, probabilities and KL difference kept for "
        "the backward), the sampling distributions [K, L, V] kept all step, the judge's [K, judge_tokens, V] "
        "bf16 logits with float32 softmax and gradient.",
        "- Phases run one after another and free their memory; inference working sets and the backward sweep's "
        "working set (one block's activations plus two hidden-state gradients per token) are rough estimates.",
        "- Gradient checkpointing keeps one bf16 hidden state per layer and token and recomputes one block at a "
        "time; the shared prompt's repeated KV cache stays alive. `frost.run.trainer` does not checkpoint yet, and "
        "transformers drops the KV cache of checkpointed layers in training, so the shared-prompt loss pass would "
        "need its own per-layer checkpointing (or K full prompt+move sequences); the judge runs in eval mode, where "
        "transformers does not checkpoint either.",
        f"- The budget leaves {headroom:.0%} of {gpu_bytes / 1e9:.0f} GB for the CUDA context, workspaces and "
        "allocator fragmentation.",
    ]


def plan_markdown(
    shape: ModelShape = QWEN3_14B,
    *,
    gpu_bytes: float = GPU_BYTES,
    headroom: float = HEADROOM,
    max_K: int = 64,
    max_B: int = 64,
    **plan_kwargs: Any,
) -> str:
    """A Markdown section: the components (GiB), the peak per phase, what gradient checkpointing and micro-batching
    buy, the largest K and B that fit on one GPU, and the assumptions. Every number is computed by `memory_plan`.

    Keywords go to `memory_plan` (the paper's setting by default); `micro_batch` and `gradient_checkpointing` set
    the plan the components table shows, the variants table always shows all four combinations.
    """
    budget = _budget(None, gpu_bytes, headroom)
    plan = memory_plan(shape, **plan_kwargs)
    base_kwargs = {k: v for k, v in plan_kwargs.items() if k not in ("gradient_checkpointing", "micro_batch")}
    variants = _plan_variants(shape, base_kwargs)
    lines = [
        *_intro_lines(plan, gpu_bytes, headroom, budget),
        *_components_table(plan),
        *_peaks_table(plan, variants, budget),
        *_savings_lines(plan, variants, base_kwargs),
        *_fit_table(plan, budget, max_K, max_B, base_kwargs),
        *_assumption_lines(gpu_bytes, headroom),
    ]
    return "\n".join(lines) + "\n"
