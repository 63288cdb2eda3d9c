"""A run folder written before the restructuring into run/, analysis/ and tools/ (commit 6a16d1d: 2 Frost steps on
the tiny Qwen3 shape, `tests/data/run-before-restructure`) resumes with today's code to the metrics that code's
uninterrupted 3-step run logged (`tests/data/run-before-restructure-3-steps.metrics.jsonl`), under today's metric
names; its adapter file has the name used before the peft layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from frost.cli import main
from frost.run.metrics import upgrade_names

DATA = Path(__file__).resolve().parent / "data"
SETTINGS = ["model.name=qwen3-tiny-shape", "model.device=cpu", "lora.rank=4", "lora.alpha=8", "data.source=handwritten",
            "data.validation_size=4", "train.K=2", "train.batch_size=2", "train.val_every=1", "train.val_documents=2",
            "train.val_samples=2", "train.checkpoint_every=1", "optim.lr=0.01", "frost.rule=full-gated",
            "train.algorithm=frost", "frost.tau=1e-9"]  # fmt: skip
COMPARED = ("reward", "reward_best", "reward_parents_mean", "kl", "loss", "entropy", "grad_norm",
            "frost/frac_replaced", "judge_fwd_seqs", "val/best_of_2", "val/reward_mean")  # fmt: skip


def rows(path: Path) -> dict[tuple[int, str], float]:
    out = {}
    for line in path.read_text().splitlines():
        m = upgrade_names(json.loads(line))  # written before TRL's names: reward_mean is reward today
        for key in COMPARED:
            if key in m:
                out[(m["step"], key)] = m[key]
    return out


def test_a_run_folder_from_before_the_restructuring_resumes_to_the_same_metrics(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA / "run-before-restructure", run)
    argv = ["train", "--steps", "3", "--run-dir", str(run), "--threads", "1", "--no-progress", "--resume"]
    assert main([*argv, *[a for s in SETTINGS for a in ("--set", s)]]) in (0, None)
    got, want = rows(run / "metrics.jsonl"), rows(DATA / "run-before-restructure-3-steps.metrics.jsonl")
    assert {k for k in want if k[0] == 3} <= set(got)  # step 3 trained and validated after the resume
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
