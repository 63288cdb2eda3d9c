"""Write tests/data/reference-runs.json: the first steps of three tiny-model runs (GRPO, Frost taylor-gated, Frost
judge-gated) at the default loss, advantage, epochs and rounds, without their timings.

It was run once, at the commit before the losses/rounds options existed (a68527b); `tests/test_losses.py` checks that
the defaults still give these metrics. Run it again only to re-base the reference on purpose:

    .venv/bin/python scripts/reference_runs.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_tiny_llama  # noqa: E402

ARMS = {"grpo": ("grpo", "taylor-gated"), "frost-taylor-gated": ("frost", "taylor-gated"),
        "frost-judge-gated": ("frost", "judge-gated")}  # fmt: skip


def reference_config(run_dir: str, algorithm: str, rule: str, **extra: object) -> dict:
    """The reference runs' config (extra: dotted-free section overrides, e.g. {"train": {...}})."""
    config: dict = {
        "model": {"name": "tiny"},
        "lora": {"rank": 4, "alpha": 8},
        "game": {"move_length": 3},
        "frost": {"rule": rule, "tau": 1e-3},
        "optim": {"lr": 3e-2},
        "data": {"source": "handwritten", "validation_size": 2},
        "train": {
            "algorithm": algorithm, "K": 3, "batch_size": 2, "steps": 3, "val_every": 3, "val_samples": 2,
            "val_documents": 2, "checkpoint_every": 0, "run_dir": run_dir,
        },
    }  # fmt: skip
    for section, values in extra.items():
        config[section] = {**config.get(section, {}), **values}  # type: ignore[dict-item]
    return config


def run_metrics(algorithm: str, rule: str, **extra: object) -> list[dict]:
    """The metrics (no time/ keys) of a reference run on the tiny model with the embedded tokenizer."""
    import torch

    from frost.config import config_from_dict
    from frost.models import LoadedModel, load_tokenizer
    from frost.run.trainer import Trainer

    tokenizer = load_tokenizer("embedded")
    model = make_tiny_llama(vocab=len(tokenizer), seed=3)
    base = LoadedModel(model=model, tokenizer=tokenizer, name="tiny", device=torch.device("cpu"), dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config_from_dict(reference_config(tmp, algorithm, rule, **extra)), base=base).run(progress=False)
        lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    out = {name: run_metrics(alg, rule) for name, (alg, rule) in ARMS.items()}
    path = ROOT / "tests" / "data" / "reference-runs.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
