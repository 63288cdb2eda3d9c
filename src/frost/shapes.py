"""Models built from a shape with random weights, for speed and memory work only: never for results.

`qwen3-14b-shape` (and the other Qwen3 sizes, `qwen3-tiny-shape` for tests, or the path of any `config.json`) gives
the architecture of the named model, initialised on the device without a download. The tokenizer is the embedded
model's (SmolLM2, 49,152 tokens); embedding rows beyond it exist, as Qwen3's do beyond its own tokenizer, and are
forbidden in moves (`frost.models.forbidden_token_mask`). A random model's rewards and samples mean nothing; its step
times, FLOPs and memory are those of the real model at the same shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frost.errors import ModelLoadError

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
