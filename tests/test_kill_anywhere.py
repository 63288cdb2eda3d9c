"""Kill anywhere: a training process SIGKILLed 20 times, at random moments and inside checkpoint and log writing
(`kill_at.py`), resumed each time, ends with the adapter and metrics of an uninterrupted run; a full disk while
saving leaves the last checkpoint intact and stops with one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from frost.run import checkpoint, runlog

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "model": {"name": "qwen3-tiny-shape", "device": "cpu"},
    "lora": {"rank": 4, "alpha": 8},
    "game": {"move_length": 3},
    "frost": {"rule": "taylor-gated", "tau": 1e-3},
    "optim": {"lr": 0.01},
    "data": {"source": "handwritten", "validation_size": 2},
    "train": {
        "algorithm": "frost",
        "K": 2,
        "batch_size": 2,
        "steps": 36,
        "val_every": 3,
        "val_documents": 2,
        "val_samples": 2,
        "checkpoint_every": 1,
    },
}
SCHEDULE = [  # (site, n-th arrival) or ("time", fraction of an uninterrupted run's wall time)
    ("append", 1), ("adapter", 1), ("time", 0.3), ("optimizer", 2), ("rename", 1), ("latest", 2), ("prune", 1),
    ("trim", 1), ("append", 4), ("time", 0.25), ("adapter", 3), ("rename", 2), ("latest", 1), ("trim", 2),
    ("optimizer", 1), ("prune", 2), ("time", 0.35), ("append", 2), ("latest", 3), ("time", 0.22),
]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def train_args(config: Path, run_dir: Path) -> list[str]:
    resume = ["--resume"] if checkpoint.has_checkpoint(run_dir) else ["--overwrite"]
    return ["train", "--config", str(config), "--run-dir", str(run_dir), "--no-progress", "--threads", "1", *resume]


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def kill_in_time(proc: subprocess.Popen, seconds: float, log: Path) -> None:
    """SIGKILL `proc` after `seconds`, or as soon as its log reaches two steps before the end, whichever comes first:
    a machine that got faster since the uninterrupted run was timed must not let the run finish unkilled."""
    last = CONFIG["train"]["steps"] - 2
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        steps = [r["step"] for r in runlog.read(log) if "loss" in r] if log.is_file() else []
        if time.monotonic() >= deadline or (steps and steps[-1] >= last):
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.05)


def final_adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.adapter_file(checkpoint.latest_checkpoint(run_dir))))


def test_a_run_killed_20_times_anywhere_resumes_to_the_uninterrupted_result(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    start = time.monotonic()
    cli = [sys.executable, "-m", "frost.cli"]
    subprocess.run([*cli, *train_args(config, whole)], env=ENV, check=True, capture_output=True, timeout=600)
    duration = time.monotonic() - start
    kills = []
    for site, at in SCHEDULE:
        args = train_args(config, killed)
        if site == "time":
            proc = subprocess.Popen([*cli, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            kill_in_time(proc, at * duration, killed / "metrics.jsonl")
            err = proc.communicate(timeout=60)[1].decode()
            rc = proc.returncode
        else:
            done = subprocess.run(
                [sys.executable, str(ROOT / "tests" / "kill_at.py"), site, str(at), *args],
                env=ENV, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            rc, err = done.returncode, done.stderr
        assert rc == -signal.SIGKILL, f"{site}:{at} ended with {rc} before the kill ({kills}): {err[-2000:]}"
        kills.append((site, at, checkpoint.finished_step(killed)))
        runlog.read(killed / "metrics.jsonl")  # readable: at most a torn last line
    assert checkpoint.finished_step(killed) < CONFIG["train"]["steps"], kills  # every kill came before the end
    subprocess.run([*cli, *train_args(config, killed)], env=ENV, check=True, capture_output=True, timeout=600)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no torn line left
    got, want = runlog.read(killed / "metrics.jsonl"), runlog.read(whole / "metrics.jsonl")
    assert without_times(got) == without_times(want)
    assert runlog.read(killed / "samples.jsonl") == runlog.read(whole / "samples.jsonl")
    adapter, expected = final_adapter(killed), final_adapter(whole)
    assert adapter.keys() == expected.keys() and all(torch.equal(adapter[k], expected[k]) for k in expected)
    assert len({site for site, _, _ in kills}) == 8 and len(kills) == 20


def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_stops_with_one_line(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    from frost.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "steps": 4, "val_every": 0}}))
    run_dir = tmp_path / "run"
    real = safetensors.torch.save_file
    saves = []

    def disk_fills_at_the_third_save(tensors, filename, *args, **kwargs):
        saves.append(filename)
        if len(saves) == 3:
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_fills_at_the_third_save)
    argv = ["train", "--config", str(config), "--run-dir", str(run_dir), "--no-progress", "--threads", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "step-0000002) is intact" in err[0]
    assert checkpoint.finished_step(run_dir) == 2
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main([*argv, "--resume"]) == 0 and checkpoint.finished_step(run_dir) == 4
    steps = [r["step"] for r in runlog.read(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("tail", ['{"step": 3, "lo', '{"step": 3, "loss": 1.0}\n{"st'])
def test_a_torn_last_line_is_skipped_and_a_broken_middle_line_is_an_error(tmp_path, tail):
    from frost.errors import FrostError

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n' + tail)
    assert [r["step"] for r in runlog.read(log)] == [1, 2] + ([3] if tail.count("\n") else [])
    runlog.trim(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(FrostError, match=r"metrics\.jsonl:2"):
        runlog.read(log)


def test_a_full_disk_while_logging_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from frost.run.runlog import LogWriteError

    log = tmp_path / "metrics.jsonl"
    runlog.append(log, [{"step": 1}])

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(LogWriteError, match=r"metrics\.jsonl: could not be written \(No space left on device\)"):
        runlog.append(log, [{"step": 2}])
    monkeypatch.undo()
    assert runlog.read(log) == [{"step": 1}]
