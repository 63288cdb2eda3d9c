"""A trained player out of Frost: a run's adapter as a peft adapter folder, or merged into its base as a model
folder that `AutoModelForCausalLM.from_pretrained` (and vLLM, and a hub) read, each with the tokenizer and its chat
template, and `frost-export.json` saying where it came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from frost.errors import ConfigError
from frost.models import load_model
from frost.run.checkpoint import (
    ADAPTER_FILE,
    load_players,
    peft_lora_config,
    read_adapter,
    resolve_checkpoint,
    run_config,
)


def export_player(
    path: Path,
    out: Path,
    *,
    merge: bool = False,
    model: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the adapter of `path` (a run folder: its latest checkpoint; a checkpoint or kept-adapter folder) into
    `out`: as a peft adapter (adapter_model.safetensors, adapter_config.json), or with `merge` its base model with
    the adapter merged in (safetensors shards and config.json). The base is the run's `model.name` unless `model`
    is given; `dtype` is the run's unless given. `out` must not exist or be empty unless `force`. Returns what
    `frost-export.json` records."""
    from safetensors.torch import save_file

    run_dir, ckpt = resolve_checkpoint(path)
    config = run_config(path)
    _prepare(out, force)
    m = config.model
    lm = load_model(model or m.name, device=device, dtype=dtype or m.dtype, random_weights=m.random_weights)
    if merge:
        player = load_players([ckpt], lm)
        merged = player.merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
    else:
        adapter = read_adapter(ckpt)
        save_file(adapter, str(out / ADAPTER_FILE), metadata={"format": "pt"})
        lora = peft_lora_config(config.lora)
        lora.base_model_name_or_path = model or m.name
        lora.save_pretrained(str(out))
    lm.tokenizer.save_pretrained(str(out))
    record = {
        "run": str(run_dir),
        "checkpoint": str(ckpt),
        "base_model": model or m.name,
        "random_weights": bool(m.random_weights),
        "merged": merge,
        "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "lora": {"rank": config.lora.rank, "alpha": config.lora.alpha, "targets": list(config.lora.target_modules)},
    }
    (out / "frost-export.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _prepare(out: Path, force: bool) -> None:
    """An empty folder to export into."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"--out: {out} is not empty; give a new folder or --force to replace its contents")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
