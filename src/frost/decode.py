"""Decoding the player's moves over a static KV cache, captured in CUDA graphs.

Sampling (`frost.sampling.sample_moves_batch`) prefills the B prompts once and then runs L decode steps over all B*K
rows. Each decode step is one token per row through every layer: on a GPU its time is the Python and kernel-launch
overhead of a few hundred small kernels, not arithmetic. `model.decode` chooses how those steps run:

- `eager`: the prefill's growing (dynamic) cache, one ordinary forward per step (the CPU's default);
- `static`: a cache of fixed shape, [B*K, heads, C, dim] per layer with C the prompt and move lengths rounded up to
  a multiple of 64, into which the prefill is copied; each step writes its token's keys and values in place. Same
  values as `eager` (test), no capture: the path `graphs` runs, checkable on any device;
- `graphs` (CUDA): `static` with the step captured in a CUDA graph (`torch.cuda.CUDAGraph`) once per rows, C and
  adapter state, checked against the eager step when captured, and replayed after: one launch per step instead of
  hundreds. The LoRA weights are read where they live, so optimizer steps need no recapture;
- `auto`: `graphs` on CUDA, `eager` elsewhere and for FSDP-sharded models.

A decoder is kept per model, rows and cache length, so training reuses its capture every step. Where building or
running the static path fails (an architecture or transformers version it does not support), sampling warns once
and decodes eagerly from then on, with the same random draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from frost.config import check_decode
from frost.errors import ConfigError

CACHE_BUCKET = 64
"""Static caches are this many positions longer at a time, so prompts of nearby lengths share one capture."""
_DECODERS = "frost_static_decoders"
_FAILED = "frost_static_decode_failed"


def resolve_decode(mode: str, model: Any, device: torch.device) -> str:
    """The mode `auto` means for this model and device (`eager` after a failed static attempt on this model)."""
    from frost.models import SHARDED_FLAG

    check_decode(mode)
    if mode == "eager" or getattr(model, _FAILED, False):
        return "eager"
    if mode == "auto":
        sharded = getattr(model, SHARDED_FLAG, False)
        return "graphs" if device.type == "cuda" and not sharded else "eager"
    if mode == "graphs" and device.type != "cuda":
        raise ConfigError(
            f"model.decode: graphs needs a CUDA device, the model is on {device.type}; use auto or static"
        )
    return mode


def cache_length(prompt_width: int, move_length: int) -> int:
    """Positions of a static cache for prompts of `prompt_width` (padded) and moves of `move_length`."""
    need = prompt_width + move_length
    return -(-need // CACHE_BUCKET) * CACHE_BUCKET


class StaticDecoder:
    """Decode steps of `rows` rows over a static cache of `length` positions, replayed from a CUDA graph when
    `captured`.

    Each step builds its attention mask itself (a row sees its real prompt tokens and the positions up to the one
    being written) and passes it ready-made, so no step reads a value back from the device: a capture of the step
    cannot bake in a branch taken on data, because deciding one would need that read, which a capture refuses."""

    def __init__(self, model: Any, rows: int, length: int, captured: bool) -> None:
        from transformers import StaticCache

        from frost.models import cache_io, model_device

        config = model.config
        attention = getattr(config, "_attn_implementation", None)
        sliding = bool(getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None))
        if attention not in ("sdpa", "eager") or sliding:
            raise RuntimeError(f"attention {attention!r}{' with sliding windows' if sliding else ''} is not supported")
        self.additive = attention == "eager"
        self.model, self.rows, self.length, self.captured = model, rows, length, captured
        device = model_device(model)
        self.cache: Any = StaticCache(config=config, max_cache_len=length)  # transformers' layer types vary
        self.cache_kw = cache_io(model)[0]
        self.token = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.mask = torch.ones(rows, length, dtype=torch.bool, device=device)
        self.position = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.start = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.kv_index = torch.arange(length, device=device).view(1, -1)
        self.capture: Callable[[Callable[[], torch.Tensor], Callable[[], None]], Captured] = cuda_graph
        """How a step is captured (tests put a stand-in here to check the bookkeeping on the CPU)."""
        self.replay: Callable[[], None] | None = None
        self.out: torch.Tensor | None = None
        self.dtype = model.get_input_embeddings().weight.dtype

    def _forward(self) -> torch.Tensor:
        written = self.cache.layers[0].cumulative_length  # the slot this step writes, on the device
        keep = (self.mask & (self.kv_index <= written)).view(self.rows, 1, 1, self.length)
        if self.additive:
            lowest = torch.finfo(self.dtype).min
            mask = torch.zeros(keep.shape, dtype=self.dtype, device=keep.device).masked_fill(~keep, lowest)
        else:
            mask = keep
        out = self.model(
            input_ids=self.token, attention_mask=mask, position_ids=self.position,
            use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache},
        )  # fmt: skip
        return out.logits[:, -1]

    def _lengths(self) -> list[torch.Tensor]:
        return [layer.cumulative_length.clone() for layer in self.cache.layers]

    def _rewind(self, lengths: list[torch.Tensor]) -> None:
        for layer, n in zip(self.cache.layers, lengths, strict=True):
            layer.cumulative_length.copy_(n)

    def _capture(self) -> None:
        """Capture one step (`self.capture`, a CUDA graph), then check that replaying it gives the eager step's
        logits; every pass is rewound, so the cache is as before."""
        before = self._lengths()
        replay, out = self.capture(self._forward, lambda: self._rewind(before))
        self._rewind(before)
        eager = self._forward().float()
        self._rewind(before)
        replay()
        self._rewind(before)
        if not torch.allclose(out.float(), eager, rtol=1e-3, atol=1e-3):
            raise RuntimeError("the replayed CUDA graph's logits differ from the eager step's")
        self.replay, self.out = replay, out

    def load(self, prefix: Any, mask: torch.Tensor | None, lengths: torch.Tensor) -> None:
        """Copy a prefilled (dynamic) cache of `rows` rows into the static one; `mask` [rows, P] its padding (None
        when unpadded), `lengths` [rows] each row's real prompt tokens."""
        layers = getattr(prefix, "layers", None)
        if layers is None or len(layers) != len(self.cache.layers):
            raise RuntimeError("the prefill's cache has no per-layer keys and values to copy")
        width = int(layers[0].keys.shape[-2])
        for static, dynamic in zip(self.cache.layers, layers, strict=True):
            keys, values = dynamic.keys, dynamic.values
            if not static.is_initialized:
                static.lazy_initialization(keys, values)
            static.keys[:, :, :width].copy_(keys)
            static.values[:, :, :width].copy_(values)
            static.cumulative_length.fill_(width)
        self.mask.fill_(True)
        if mask is not None:
            self.mask[:, :width].copy_(mask.bool())
        self.start.copy_(lengths.view(-1, 1))

    def step(self, token: torch.Tensor, slot: int) -> torch.Tensor:
        """[rows, V] logits of the next slot after appending `token` [rows, 1] at move slot `slot` (its position
        continues from each row's prompt)."""
        self.token.copy_(token)
        torch.add(self.start, slot, out=self.position)
        if not self.captured:
            return self._forward().clone()
        if self.replay is None:
            self._capture()
        assert self.replay is not None and self.out is not None
        self.replay()
        return self.out.clone()


Captured = tuple[Callable[[], None], torch.Tensor]
"""(replay, the output tensor each replay rewrites)."""


def cuda_graph(step: Callable[[], torch.Tensor], rewind: Callable[[], None]) -> Captured:
    """Capture `step` in a CUDA graph after two warm-up runs on a side stream (each followed by `rewind`, which undoes
    what a step wrote); capturing records the kernels without running them."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
            rewind()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph.replay, out


def _adapter_state(model: Any) -> tuple[Any, ...]:
    """What a captured step bakes in besides weights: train/eval mode and which LoRA adapters are on."""
    for module in model.modules():  # peft's LoRA layers carry both as plain values
        disabled, active = getattr(module, "disable_adapters", None), getattr(module, "active_adapters", None)
        if isinstance(disabled, bool) and isinstance(active, list | tuple):
            return (model.training, disabled, tuple(active))
    return (model.training,)


def static_decoder(model: Any, rows: int, length: int, captured: bool) -> StaticDecoder:
    """The model's decoder for `rows` rows, `length` cache positions and its adapter state, built on first use and
    kept (a capture is replayed only in the state it was made in; never in train mode, whose dropout draws)."""
    decoders: dict[tuple[Any, ...], StaticDecoder] = getattr(model, _DECODERS, None) or {}
    captured = captured and not model.training
    key = (rows, length, captured, *_adapter_state(model))
    if key not in decoders:
        decoders[key] = StaticDecoder(model, rows, length, captured)
        setattr(model, _DECODERS, decoders)
    return decoders[key]


def give_up_static(model: Any, mode: str, exc: BaseException) -> None:
    """Warn once and decode this model eagerly from now on."""
    setattr(model, _FAILED, True)
    setattr(model, _DECODERS, {})
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    warnings.warn(f"model.decode {mode}: {type(exc).__name__}: {first}; decoding eagerly instead", stacklevel=3)
