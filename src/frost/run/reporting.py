"""Where a run's metrics go (`train.report_to`): `metrics.jsonl` always (what a resumed run, `frost report` and `frost
experiment` read), TensorBoard's event files when TensorBoard is installed, and Weights & Biases or trackio when
asked (optional extras, imported only then; a one-line error when missing). Validation moves go to a table where the
backend has one. Only the main process reports."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

from frost.errors import ConfigError
from frost.run import runlog

MOVES_TABLE = ("step", "doc", "move", "reward")
"""The columns of the validation-moves table (one row per sampled move)."""


class MetricsReporter:
    """Appends each record to `run_dir`/metrics.jsonl and sends its finite numbers to the other backends."""

    def __init__(
        self, run_dir: Path, *, main: bool, report_to: list[str] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.main = main
        wanted = ["jsonl", "tensorboard"] if report_to is None else report_to
        self._backends: list[Any] = []
        if main:
            builders = {"tensorboard": _TensorBoard.open, "wandb": _Wandb, "trackio": _Trackio}
            for name in wanted:
                if name in builders:
                    backend = builders[name](run_dir, config or {})
                    if backend is not None:
                        self._backends.append(backend)

    def log(self, record: dict[str, Any]) -> None:
        """Report one record (with its `step`)."""
        if not self.main:
            return
        runlog.append(self.path, [record])
        numbers = {
            k: float(v)
            for k, v in record.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        for backend in self._backends:
            backend.log(numbers, int(record["step"]))

    def log_moves(self, step: int, samples: list[dict[str, Any]]) -> None:
        """The validation moves of `step` (`samples.jsonl` records) as a table, where a backend has tables."""
        if not self.main:
            return
        rows = [
            [step, str(s.get("doc", "")), m["text"], float(m["reward"])] for s in samples for m in s.get("moves", [])
        ]
        for backend in self._backends:
            backend.table("val/moves", rows, step)

    def close(self) -> None:
        """Finish every backend (idempotent)."""
        for backend in self._backends:
            backend.close()
        self._backends = []


def _optional(module: str, extra: str) -> Any:
    """Import an optional backend, or one line naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"train.report_to: {module} is not installed; pip install 'frost-training[{extra}]' or drop {extra} "
            "from train.report_to"
        ) from None


class _TensorBoard:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run_dir: Path, config: dict[str, Any]) -> _TensorBoard | None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: metrics.jsonl still has everything
            return None
        return cls(SummaryWriter(str(run_dir / "tensorboard")))

    def log(self, numbers: dict[str, float], step: int) -> None:
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def table(self, name: str, rows: list[list[Any]], step: int) -> None:
        return  # TensorBoard has no tables; samples.jsonl holds the moves

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    """A wandb run per run folder; its id is kept in RUN/wandb-run-id, so that a resumed run continues it."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.wandb = _optional("wandb", "wandb")
        id_file = run_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "frost"), name=run_dir.name, id=run_id, resume="allow",
            dir=str(run_dir), config=config,
        )  # fmt: skip

    def log(self, numbers: dict[str, float], step: int) -> None:
        self.run.log(numbers, step=step)

    def table(self, name: str, rows: list[list[Any]], step: int) -> None:
        self.run.log({name: self.wandb.Table(columns=list(MOVES_TABLE), data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


class _Trackio:
    """A trackio run named after the run folder (local by default: $TRACKIO_DIR; a Space with $TRACKIO_SPACE_ID)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.trackio = _optional("trackio", "trackio")
        self.run = self.trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "frost"), name=run_dir.name, config=config, resume="allow",
            space_id=os.environ.get("TRACKIO_SPACE_ID"),
        )  # fmt: skip

    def log(self, numbers: dict[str, float], step: int) -> None:
        self.trackio.log(numbers, step=step)

    def table(self, name: str, rows: list[list[Any]], step: int) -> None:
        self.trackio.log({name: self.trackio.Table(columns=list(MOVES_TABLE), data=rows)}, step=step)

    def close(self) -> None:
        self.trackio.finish()
