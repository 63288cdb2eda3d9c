"""`frost.train`: a whole training run in one call, from a config file, a dict or a `Config`, with overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frost.config import Config, load_config
from frost.run.metrics import read_metrics


@dataclass
class RunResult:
    """What a training run left: its folder, the step it reached, and its logged metrics."""

    run_dir: Path
    step: int
    steps: int
    """The steps asked for (`train.steps`); `step` is lower when a signal stopped the run (it can resume)."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """The training steps' records (metrics.jsonl)."""
    validation: list[dict[str, Any]] = field(default_factory=list)
    """The validation records (`val/*`), including step 0's."""

    @property
    def final(self) -> dict[str, Any]:
        """The last validation record ({} without validation)."""
        return self.validation[-1] if self.validation else {}


def train(
    config: Config | dict[str, Any] | str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train GRPO or Frost-GRPO as `frost train` does and return the run's result.

    `config`: a `Config`, a dict of sections, a YAML file, or None for the defaults; `overrides`: dotted fields and
    values applied on top (`{"train.steps": 10, "frost.rule": "judge-gated"}`). `resume` continues the run folder's
    latest checkpoint; `overwrite` starts again in a folder that holds a run.
    """
    from frost.run.trainer import Trainer

    sets = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    if isinstance(config, Config):
        config = config.to_dict()
    cfg = load_config(None, sets, sections=config) if isinstance(config, dict) else load_config(config, sets)
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        step = trainer.run(progress=progress)
    finally:
        trainer.close()
    records = read_metrics(trainer.run_dir / "metrics.jsonl") if trainer.world.is_main else []
    return RunResult(
        run_dir=trainer.run_dir,
        step=step,
        steps=cfg.train.steps,
        metrics=[r for r in records if "reward" in r],
        validation=[r for r in records if any(k.startswith("val/") for k in r)],
    )
