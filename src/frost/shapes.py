"""Models built from a shape with random weights, for speed and memory work only: never for results.

`qwen3-14b-shape` (and the other Qwen3 sizes, `qwen3-tiny-shape` for tests, or the path of any `config.json`) gives
the architecture of the named model, initialised on the device without a download. The tokenizer is the embedded
model's (SmolLM2, 49,152 tokens); embedding rows beyond it exist, as Qwen3's do beyond its own tokenizer, and are
forbidden in moves (`frost.models.forbidden_token_mask`). A random model's rewards and samples mean nothing; its step
times, FLOPs and memory are those of the real model at the same shapes. `ModelShape` holds the sizes that memory and
compute depend on (read by `frost.run.memplan` and by the memory check before loading).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frost.errors import ModelLoadError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every attention and MLP projection (the paper's adapter)."""

SHAPE_SUFFIX = "-shape"
"""Model names ending in this are shapes: `<name>-shape`."""

_QWEN3_COMMON: dict[str, Any] = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "vocab_size": 151936,
    "head_dim": 128,
    "num_key_value_heads": 8,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-tiny": {**_QWEN3_COMMON, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 49152,
                   "tie_word_embeddings": True},
    "qwen3-0.6b": {**_QWEN3_COMMON, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "tie_word_embeddings": True},
    "qwen3-1.7b": {**_QWEN3_COMMON, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "tie_word_embeddings": True},
    "qwen3-4b": {**_QWEN3_COMMON, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "tie_word_embeddings": True},
    "qwen3-8b": {**_QWEN3_COMMON, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "tie_word_embeddings": False},
    "qwen3-14b": {**_QWEN3_COMMON, "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 40,
                  "num_attention_heads": 40, "tie_word_embeddings": False},
    "qwen3-32b": {**_QWEN3_COMMON, "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                  "num_attention_heads": 64, "tie_word_embeddings": False},
}  # fmt: skip
"""The Qwen3 family's config.json fields that set its shape (from the hub), and a tiny one for tests."""


def is_shape(name: str) -> bool:
    """Whether a model name asks for a random-weight model: `<known>-shape` or a path ending in `.json`."""
    return name.endswith(SHAPE_SUFFIX) or name.endswith(".json")


def shape_config(name: str) -> dict[str, Any]:
    """The config.json fields of a shape name (`qwen3-14b-shape`, or a Qwen3 hub id such as `Qwen/Qwen3-14B`), of
    a config.json file, or of a model folder's config.json."""
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        name = str(folder / "config.json")
    if name.endswith(".json"):
        path = Path(name).expanduser()
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model {name!r}: cannot read a config.json there ({exc})") from exc
    key = name.lower().removesuffix(SHAPE_SUFFIX).rsplit("/", 1)[-1]  # Qwen/Qwen3-14B -> qwen3-14b
    if key not in SHAPES:
        known = ", ".join(f"{k}{SHAPE_SUFFIX}" for k in SHAPES)
        raise ModelLoadError(f"model {name!r}: unknown shape; use one of {known}, or the path of a config.json")
    return dict(SHAPES[key])


def random_model(name: str, device: Any, dtype: Any, *, seed: int = 0) -> Any:
    """A causal LM of the shape `name` with random weights, created directly on `device` in `dtype`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = shape_config(name)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise ModelLoadError(f"model {name!r}: the config has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **fields)
    except ValueError as exc:
        raise ModelLoadError(f"model {name!r}: {str(exc).splitlines()[0]}") from exc
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama/Qwen-style decoder that memory depends on."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    qk_norm: bool = True
    """Per-head RMSNorm of queries and keys (Qwen3 has it, Llama does not)."""
    name: str = field(default="model", compare=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any) -> ModelShape:
        """From a transformers `PretrainedConfig` (or anything with those attributes) or a config.json dict."""

        def get(key: str, default: Any = None) -> Any:
            if isinstance(cfg, Mapping):
                return cfg.get(key, default)
            return getattr(cfg, key, default)

        missing = [
            k
            for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
            if get(k) is None
        ]
        if get("vocab_size") is None:
            missing.append("vocab_size")
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}")
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        model_type = str(get("model_type", "") or "")
        qk_norm = get("qk_norm")
        if qk_norm is None:
            qk_norm = model_type.startswith("qwen3") if model_type else True
        return cls(
            hidden_size=hidden,
            num_hidden_layers=int(get("num_hidden_layers")),
            intermediate_size=int(get("intermediate_size")),
            num_attention_heads=heads,
            num_key_value_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            vocab_size=int(get("vocab_size")),
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            qk_norm=bool(qk_norm),
            name=str(get("_name_or_path", "") or model_type or "model"),
        )

    @property
    def q_dim(self) -> int:
        """Width of the queries (and of the attention output): heads * head_dim."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): kv_heads * head_dim."""
        return self.num_key_value_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection of one decoder block."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def block_parameters(self) -> int:
        """The weights of one decoder layer: its projections and RMSNorm gains."""
        h = self.hidden_size
        block = sum(a * b for a, b in self.linear_shapes().values()) + 2 * h
        if self.qk_norm:
            block += 2 * self.head_dim
        return block

    def base_parameters(self) -> int:
        """All weights: embeddings (and an untied LM head), projections and RMSNorm gains (no biases)."""
        h = self.hidden_size
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * self.block_parameters() + h

    def lora_parameters(self, rank: int, targets: Sequence[str] = LORA_TARGETS) -> int:
        """LoRA parameters: r * (in + out) for each targeted projection of each layer."""
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; known: {', '.join(shapes)}")
        return self.num_hidden_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


# Qwen3-14B's config.json (Qwen/Qwen3-14B on the Hugging Face hub).
QWEN3_14B = ModelShape(
    hidden_size=5120,
    num_hidden_layers=40,
    intermediate_size=17408,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    tie_word_embeddings=False,
    qk_norm=True,
    name="Qwen3-14B",
)


# ------------------------------------------------------------------------------------------ saved activations
