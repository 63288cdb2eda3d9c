"""The one owner of a run folder's checkpoint layout.

    RUN/config.yaml                     the run's whole config (the LoRA shape and the game come from here)
    RUN/game.yaml                       the game played, as a game file (built-in games too)
    RUN/checkpoints/latest              the name of the newest checkpoint
    RUN/checkpoints/step-0000050/       adapter_model.safetensors, adapter_config.json, optimizer.pt, rng.pt, state.json
    RUN/adapters/step-0000016/          adapter_model.safetensors, adapter_config.json kept at a validation step
                                        (`train.keep_adapters`)

Each adapter folder is also a peft adapter: `PeftModel.from_pretrained(base, FOLDER)` loads it. Folders written
before that (`adapter.safetensors`, the same tensors under an older name and no adapter_config.json) still load.

A checkpoint is written to a temporary folder and renamed into place, then `latest` is replaced atomically; old
checkpoints are renamed out of the way before they are deleted. So every `step-*` folder is complete, and a run
killed at any moment keeps its previous checkpoint: when `latest` names a folder that a kill left missing, the
newest complete one is used.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from frost.errors import ConfigError, FrostError

KEEP = 2
"""Checkpoints kept per run (older ones are removed)."""
ADAPTER_FILE = "adapter_model.safetensors"
"""The adapter's tensors, under peft's file name (with peft's `adapter_config.json` beside it)."""
OLDER_ADAPTER_FILE = "adapter.safetensors"
"""The same tensors' file name in run folders written before the peft layout."""


def adapter_file(folder: Path) -> Path | None:
    """The adapter tensors of a checkpoint or kept-adapter folder (either layout), or None."""
    for name in (ADAPTER_FILE, OLDER_ADAPTER_FILE):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def write_adapter(folder: Path, player: Any) -> None:
    """Write the player's active adapter into `folder` as peft writes one: adapter_model.safetensors and
    adapter_config.json (the LoRA shape; its base model as the player's base names it)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(player).items()}
    save_file(adapter, str(folder / ADAPTER_FILE), metadata={"format": "pt"})
    player.peft_config[player.active_adapter].save_pretrained(str(folder))


def read_adapter(folder: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The adapter tensors of a checkpoint or kept-adapter folder (either layout)."""
    from safetensors.torch import load_file

    path = adapter_file(folder)
    if path is None:
        raise ConfigError(f"{folder}: no adapter ({ADAPTER_FILE}) in this folder")
    return load_file(str(path), device=device)


def resolve_checkpoint(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint folder) of a run folder (its latest checkpoint) or of one checkpoint folder."""
    path = Path(path)
    if adapter_file(path) is not None:
        run_dir = path.parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{path}: a checkpoint must sit in RUN/checkpoints/ next to RUN/config.yaml")
        return run_dir, path
    newest = latest_checkpoint(path)
    if not (path / "config.yaml").is_file() or newest is None:
        raise ConfigError(
            f"{path} is neither a run folder with a checkpoint (checkpoints/latest) nor a checkpoint folder "
            f"({ADAPTER_FILE})"
        )
    return path, newest


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `checkpoints/latest` names, or the newest complete one when a kill left it missing; None
    when the run has none."""
    root = Path(run_dir) / "checkpoints"
    latest = root / "latest"
    named = root / latest.read_text().strip() if latest.is_file() else None
    if named is not None and (named / "state.json").is_file():
        return named
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def run_config(path: Path) -> Any:
    """The validated `Config` of a run folder or checkpoint; a game file that moved is replaced by RUN/game.yaml."""
    from frost.config import config_from_dict
    from frost.games import is_game_file

    run_dir, _ = resolve_checkpoint(path)
    values = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    game = values.get("game", {})
    kind = str(game.get("kind", "infilling"))
    if is_game_file(kind) and not Path(kind).expanduser().is_file() and (run_dir / "game.yaml").is_file():
        game["kind"] = str(run_dir / "game.yaml")
    return config_from_dict(values)


def label(path: Path) -> str:
    """A short name of a run or checkpoint for tables."""
    run_dir, ckpt = resolve_checkpoint(path)
    return run_dir.name if run_dir == Path(path) else f"{run_dir.name}/{ckpt.name}"


def peft_lora_config(lora: Any) -> Any:
    """peft's LoraConfig for a run's `lora` section."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_players(runs: list[Path], base: Any) -> Any:
    """One PeftModel over the shared base weights with each run's adapter (a run folder's latest checkpoint, or a
    checkpoint folder), named "run0", "run1", ...; each adapter's shape comes from its run's config."""
    from peft import get_peft_model, set_peft_model_state_dict

    player = None
    for i, path in enumerate(runs):
        name = f"run{i}"
        lora = peft_lora_config(run_config(path).lora)
        lora.lora_dropout = 0.0
        _, ckpt = resolve_checkpoint(path)
        if player is None:
            player = get_peft_model(base.model, lora, adapter_name=name)
        else:
            player.add_adapter(name, lora)
        adapter = read_adapter(ckpt)
        check_adapter_fits(adapter, player, ckpt, adapter_name=name)
        set_peft_model_state_dict(player, adapter, adapter_name=name)
    assert player is not None
    player.eval()
    return player


def player_and_judge(base: Any, checkpoints: Any = (), *, judge_batch_size: int = 16) -> tuple[Any, Any]:
    """The player and its judge over one copy of the base weights (`base`, a loaded model).

    Without checkpoints the base model is both. With a run folder or checkpoint (or a list of them) the player is
    `load_players`' PeftModel with those adapters (named "run0", "run1", ...; the first active), and the judge is the
    same weights with the adapters switched off, so the judge is always the base, as in training."""
    from frost.judge import Judge

    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints or [])
    if not paths:
        return base.model, Judge(base.model, batch_size=judge_batch_size)
    player = load_players([Path(p) for p in paths], base)
    player.set_adapter("run0")
    return player, Judge(player, batch_size=judge_batch_size, context=player.disable_adapter)


@dataclass
class TrainingState:
    """What a checkpoint restores besides the adapter and the optimizer."""

    step: int
    cursor: dict[str, int]
    skipped_steps: int = 0
    """Steps skipped so far for non-finite values."""


def adapter_path(run_dir: Path, step: int) -> Path:
    """The folder of the adapter a run kept at validation step `step` (`train.keep_adapters`)."""
    return run_dir / "adapters" / f"step-{step:07d}"


def save_adapter(run_dir: Path, step: int, player: Any) -> Path:
    """Keep the player's adapter at `step` in RUN/adapters/step-N/ (`write_adapter`; written to a temporary folder
    and renamed in; an earlier copy at the same step is replaced). The folder loads like a checkpoint
    (`resolve_checkpoint`, `load_players`) and as a peft adapter."""
    final = adapter_path(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_adapter(tmp, player)
    if final.exists():
        discard(final)
    os.replace(tmp, final)
    return final


def kept_adapter_steps(run_dir: Path) -> list[int]:
    """The validation steps whose adapter a run kept."""
    root = Path(run_dir) / "adapters"
    return sorted(int(p.name[5:]) for p in root.glob("step-*") if adapter_file(p) is not None)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """The folder of a run's checkpoint at `step`."""
    return run_dir / "checkpoints" / f"step-{step:07d}"


def save(
    run_dir: Path,
    *,
    player: Any,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    generator: torch.Generator | None = None,
) -> Path:
    """Write adapter, optimizer, RNG states (the global ones, and `generator`'s when given), step and data position
    atomically; keep the last `KEEP`. A write that fails (a full disk) removes the partial checkpoint and raises
    `CheckpointWriteError`; the previous checkpoint stays as it was."""
    final = checkpoint_path(run_dir, state.step)
    root = final.parent
    tmp = root / f".tmp-{final.name}"
    try:
        return _save(final, tmp, player=player, optimizer=optimizer, state=state, generator=generator)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(run_dir)
        kept = f"the last checkpoint ({previous.name}) is intact" if previous else "there is no earlier checkpoint"
        raise CheckpointWriteError(
            f"checkpoint {final}: could not be written ({exc.strerror or exc}); {kept}: free disk space and "
            "resume with --resume"
        ) from None


class CheckpointWriteError(FrostError):
    """A checkpoint could not be written (e.g. the disk is full)."""


def _save(
    final: Path,
    tmp: Path,
    *,
    player: Any,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    generator: torch.Generator | None,
) -> Path:
    root, name = final.parent, final.name
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_adapter(tmp, player)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(
        {
            "generator": None if generator is None else generator.get_state(),
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / "rng.pt",
    )
    (tmp / "state.json").write_text(
        json.dumps({"step": state.step, "cursor": state.cursor, "skipped_steps": state.skipped_steps})
    )
    if final.exists():  # saved again at the same step (e.g. after a stop signal)
        discard(final)
    os.replace(tmp, final)
    latest_tmp = root / ".latest.tmp"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / "latest")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-KEEP]:
        discard(old)
    return final


def discard(folder: Path) -> None:
    """Rename a checkpoint out of the `step-*` namespace (atomic), then delete it."""
    trash = folder.with_name(f".trash-{folder.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def load(
    run_dir: Path,
    *,
    player: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> TrainingState:
    """Restore the latest checkpoint of a run into `player`, `optimizer` and the RNGs."""
    from peft import set_peft_model_state_dict

    _, path = resolve_checkpoint(run_dir)
    adapter = read_adapter(path, device=str(device))
    check_adapter_fits(adapter, player, path)
    set_peft_model_state_dict(player, adapter)
    # weights_only: a checkpoint can hold tensors and plain containers, never code to run
    try:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"checkpoint {path}: optimizer.pt or rng.pt holds objects other than tensors and plain data; "
            "refusing to unpickle them (write the checkpoint again with frost train)"
        ) from exc
    if generator is not None and rng.get("generator") is not None:
        generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((path / "state.json").read_text())
    return TrainingState(step=state["step"], cursor=state["cursor"], skipped_steps=state.get("skipped_steps", 0))


def check_adapter_fits(
    adapter: dict[str, torch.Tensor], player: Any, path: Path, *, adapter_name: str = "default"
) -> None:
    """One line (ConfigError) when a saved adapter is not for this model and LoRA shape."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(player, adapter_name=adapter_name)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    saved = {k: tuple(v.shape) for k, v in adapter.items()}
    if saved == expected:
        return
    wrong = sorted(k for k in expected.keys() & saved.keys() if expected[k] != saved[k])
    if wrong:
        detail = f"{wrong[0]} is {list(saved[wrong[0]])} there and {list(expected[wrong[0]])} here"
    else:
        detail = f"{len(saved.keys() - expected.keys())} of its tensors are not in this model's adapter, and " + (
            f"{len(expected.keys() - saved.keys())} of this model's are not in it"
        )
    raise ConfigError(
        f"checkpoint {path}: its adapter was saved for another model or LoRA shape ({detail}); use the run's own "
        "model and lora settings (RUN/config.yaml) or start a new run"
    )


def finished_step(run_dir: Path) -> int | None:
    """The step of a run's latest checkpoint (None: no checkpoint)."""
    path = latest_checkpoint(run_dir)
    return None if path is None else int(json.loads((path / "state.json").read_text())["step"])


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run has a complete checkpoint to resume from."""
    return latest_checkpoint(run_dir) is not None
