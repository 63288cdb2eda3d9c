"""An experiment's grid, its choices on the dev texts (choices.json), and the test phase that reads the test split
once, on a tiny random-weight model; every choice recomputed here from the runs' logs."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import pytest
import yaml

from frost.analysis.experiment.runner import _run_test, load_experiment
from frost.cli import main
from frost.errors import ConfigError
from test_experiment import COMMON

SPLITS = {"data.validation_size": 2, "data.test_start": 2, "data.test_size": 2, "train.keep_adapters": True,
          "train.steps": 2, "train.val_documents": 2}  # fmt: skip


def write(folder: Path, out: Path) -> Path:
    spec = {
        "out": str(out),
        "seeds": [0, 1],
        "set": {**COMMON, **SPLITS},
        "reference": "grpo",
        "baselines": ["grpo"],
        "grid": {"field": "optim.lr", "values": [0.03, 0.001], "seed": 0},
        "choose": {"last": 2},
        "test": {"samples": 2},
        "arms": {
            "grpo": {"set": {"train.algorithm": "grpo", "train.K": 4}},
            "frost": {"set": {"train.algorithm": "frost", "frost.rule": "judge-gated"}},
        },
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dev_best(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val/best_of_2"]) for r in rows if "val/best_of_2" in r]


def test_grid_choices_then_one_test_phase(tmp_path, capsys):
    out = tmp_path / "out"
    path = write(tmp_path, out)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "frost-G0-seed0", "frost-G1-seed0", "frost-seed0", "frost-seed1",
        "grpo-G0-seed0", "grpo-G1-seed0", "grpo-seed0", "grpo-seed1",
    ]  # fmt: skip
    choices = json.loads((out / "choices.json").read_text())
    assert choices["complete"] and "last 2 validation steps" in choices["rule"]
    for arm in ("grpo", "frost"):
        scores = [statistics.fmean(v for _, v in dev_best(runs / f"{arm}-G{i}-seed0")[-2:]) for i in (0, 1)]
        pick = 0 if scores[0] >= scores[1] else 1
        assert choices["arms"][arm]["value"] == [0.03, 0.001][pick]
        assert (runs / f"{arm}-seed0").is_symlink() and (runs / f"{arm}-seed0").resolve().name == f"{arm}-G{pick}-seed0"
        config = yaml.safe_load((runs / f"{arm}-seed1" / "config.yaml").read_text())
        assert config["optim"]["lr"] == [0.03, 0.001][pick]  # the other seeds train at the chosen value
        for seed in (0, 1):
            vals = dev_best(runs / f"{arm}-seed{seed}")
            best = max(v for _, v in vals)
            chosen = choices["checkpoints"][f"{arm}-seed{seed}"]
            assert chosen["best_dev"] == next(s for s, v in vals if v == best) and chosen["last"] == 2
    assert not (out / "test").exists()  # nothing read the test split yet
    test_docs = set()
    assert main(["experiment", str(path), "--no-progress", "--threads", "1", "--test"]) == 0
    digest = hashlib.sha256((out / "choices.json").read_bytes()).hexdigest()
    for run, chosen in choices["checkpoints"].items():
        for kind in ("last", "best_dev"):
            folder = out / "test" / run / f"step-{chosen[kind]:07d}"
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["record_sha256"] == digest and summary["split"] == "test" and summary["texts"] == 2
            test_docs |= {json.loads(x)["doc"] for x in (folder / "samples.jsonl").read_text().splitlines()}
    assert len(test_docs) == 2
    for run in runs.iterdir():  # the runs' own validations never saw a test text
        played = {json.loads(x)["doc"] for x in (run / "samples.jsonl").read_text().splitlines()}
        assert played and not played & test_docs
    summary = json.loads((out / "summary.json").read_text())
    pair = next(p for p in summary["test"]["pairs"] if p["checkpoint"] == "last")
    diffs = []
    for seed in (0, 1):
        best = {}
        for arm in ("frost", "grpo"):
            step = choices["checkpoints"][f"{arm}-seed{seed}"]["last"]
            rows = (out / "test" / f"{arm}-seed{seed}" / f"step-{step:07d}" / "samples.jsonl").read_text()
            best[arm] = {r["doc"]: max(m["reward"] for m in r["moves"]) for r in map(json.loads, rows.splitlines())}
        diffs += [best["frost"][d] - best["grpo"][d] for d in sorted(best["frost"])]
    assert pair["n"] == 4 and pair["mean"] == pytest.approx(statistics.fmean(diffs))
    assert "Test split" in (out / "summary.md").read_text()


def test_the_test_phase_waits_for_complete_choices(tmp_path):
    experiment = load_experiment(write(tmp_path, tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"choices\.json is not complete"):
        _run_test(experiment, lambda record: None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grid": {"field": "optim.lr", "values": [0.1]}}, "experiment.grid.values"),
        ({"grid": {"field": "lr", "values": [0.1, 0.2]}}, "experiment.grid.field"),
        ({"choose": {"last": 0}}, "experiment.choose"),
        ({"test": {"samples": 0}}, "experiment.test"),
        ({"baselines": ["nope"]}, "experiment.baselines"),
    ],
)
def test_bad_grid_choose_and_test_blocks_are_one_line(tmp_path, capsys, change, field):
    path = write(tmp_path, tmp_path / "out")
    spec = yaml.safe_load(path.read_text()) | change
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path), "--summary-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err
