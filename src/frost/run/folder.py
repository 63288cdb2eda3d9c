"""A run folder before a run starts in it: writable, refused when it holds a run unless the run is resumed or started
again, and cleared of the old run's logs, checkpoints and kept adapters when it is started again."""

from __future__ import annotations

import shutil
from pathlib import Path

from frost.errors import ConfigError
from frost.run import checkpoint

RUN_FILES = ("metrics.jsonl", "samples.jsonl", "game.yaml", "wandb-run-id")
RUN_FOLDERS = ("checkpoints", "adapters", "tensorboard", "wandb")


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Make `run_dir` ready for a run: one-line errors for a folder that cannot be written, `--resume` without a
    checkpoint, and a folder holding a run without `--resume` or `--overwrite`."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"train.run_dir: cannot write to {run_dir} ({exc.strerror})") from exc
    if resume and not checkpoint.has_checkpoint(run_dir):
        raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
    if not resume and not overwrite and (run_dir / "metrics.jsonl").exists():
        raise ConfigError(
            f"train.run_dir: {run_dir} already holds a run; pass --resume to continue it, "
            "--overwrite to start it again, or choose another --run-dir"
        )
    if not resume:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
