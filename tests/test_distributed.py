"""Data parallelism with real processes: 2 gloo ranks under torchrun on a tiny random-weight model (CPU).

A 2-rank run with B=4 equals a 1-rank run with B=4 (weights and logged metrics); a 2-rank checkpoint resumes on one
rank to the weights of an uninterrupted run; a rank killed mid-run makes the job exit instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frost.run.distributed import World, shard, text_seed

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "model.name=qwen3-tiny-shape",
    "model.device=cpu",
    "lora.rank=4",
    "lora.alpha=8",
    "data.source=handwritten",
    "data.validation_size=4",
    "train.K=2",
    "train.batch_size=4",
    "train.val_every=1",
    "train.val_documents=3",
    "train.val_samples=2",
    "train.checkpoint_every=1",
    "optim.lr=0.01",
    "frost.rule=full-gated",
]


def train(run_dir: Path, steps: int, ranks: int, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    argv = [*launcher, "-m", "frost.cli", "train", "--steps", str(steps), "--run-dir", str(run_dir),
            "--threads", "1", "--no-progress", *[a for s in SETTINGS for a in ("--set", s)], *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def adapter(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"step-{step:07d}" / "adapter_model.safetensors"))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


SAME = ("reward", "reward_best", "reward_parents_mean", "kl", "loss", "entropy", "frost/frac_replaced",
        "grad_norm")  # fmt: skip
"""Metrics a multi-rank run must share with one rank. grad_norm: the gradient summed over the ranks before the
optimizer step; AdamW's first update is lr * sign(g), blind to a uniform gradient scale (a wrong shard or world-size
division), the norm is not."""


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)  # the adapter has moved


def test_shards_cover_every_text_once_and_differ_by_at_most_one():
    for n in range(0, 11):
        for size in (1, 2, 3, 4):
            parts = [list(range(n))[shard(n, World(rank=r, size=size))] for r in range(size)]
            assert [i for part in parts for i in part] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert text_seed(0, 3, 5) == text_seed(0, 3, 5) != text_seed(0, 3, 6)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one") / "run"
    train(run, 3, 1)
    return run


def test_two_ranks_equal_one_rank_and_resume_on_one_rank(one_rank, tmp_path):
    two = tmp_path / "two"
    train(two, 2, 2)
    assert_same_weights(adapter(two, 2), adapter(one_rank, 2))
    rows_two, rows_one = metrics(two), metrics(one_rank)
    train_two = [m for m in rows_two if "reward" in m]
    train_one = [m for m in rows_one if "reward" in m][:2]
    assert [m["step"] for m in train_two] == [1, 2] and all(m["world_size"] == 2 for m in train_two)
    for a, b in zip(train_two, train_one, strict=True):
        for key in SAME:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
        for key in ("judge_fwd_seqs", "judge_bwd_seqs", "player_fwd_seqs", "tokens", "completions/mean_length"):
            assert a[key] == b[key], key
    val_two = [m for m in rows_two if "val/reward_mean" in m]
    val_one = [m for m in rows_one if "val/reward_mean" in m][:3]
    for a, b in zip(val_two, val_one, strict=True):
        assert a["val/best_of_2"] == pytest.approx(b["val/best_of_2"], rel=1e-4, abs=1e-4)
    # only rank 0 wrote: one record per step and validation, one line of samples per validation text
    samples = (two / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 3 * 3
    # the 2-rank checkpoint resumes on one rank to the uninterrupted run's weights
    train(two, 3, 1, "--resume")
    assert_same_weights(adapter(two, 3), adapter(one_rank, 3))
    assert [m["step"] for m in metrics(two) if "reward" in m] == [1, 2, 3]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def test_a_killed_rank_ends_the_job_instead_of_hanging(tmp_path):
    run = tmp_path / "killed"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv = [*launcher, "-m", "frost.cli", "train", "--steps", "200", "--run-dir", str(run), "--threads", "1",
            "--no-progress", *[a for s in SETTINGS for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "FROST_DIST_TIMEOUT": "30"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until training runs
            log = run / "metrics.jsonl"
            if log.is_file() and '"reward"' in log.read_text():
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.5)
        victim = next(pid for pid in _children(proc.pid) if _rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 60
        assert proc.returncode != 0
        assert "rank" in err.lower()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_the_step_bench_runs_under_torchrun_with_rank_0_writing(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    bench = ["-m", "frost.cli", "bench", "--only", "steps", "--model", "qwen3-tiny-shape", "--device", "cpu",
             "--K", "2", "--L", "3", "--B", "3", "--repeats", "1", "--rules", "judge-gated", "--no-naive",
             "--threads", "1", "--out", str(tmp_path / "BENCH.md"), "--json", str(tmp_path / "bench.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, *bench], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    (steps,) = result["steps"]
    assert steps["world_size"] == 2 and [a["label"] for a in steps["arms"]] == ["Frost K=2 judge-gated", "GRPO K=2",
                                                                                "GRPO K=4"]  # fmt: skip
    for arm in steps["arms"]:  # judge forwards of the whole step (3 texts on 2 ranks), not of rank 0's 2 texts
        assert arm["judge_fwd_seqs"] <= 3 * (2 * arm["K"] if arm["algorithm"] == "frost" else arm["K"])
        assert arm["judge_fwd_seqs"] > 2 * arm["K"] or arm["algorithm"] == "frost"
    assert proc.stdout.count("| GRPO K=4 |") == 1  # rank 0 alone prints
    assert "x 2 ranks" in (tmp_path / "BENCH.md").read_text()
    one_rank = [*bench[:-4], "--out", str(tmp_path / "ONE.md"), "--json", str(tmp_path / "one.json")]
    single = subprocess.run([sys.executable, *one_rank], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())["steps"][0]
    assert one["world_size"] == 1
    assert [a["judge_fwd_seqs"] for a in one["arms"]] == [a["judge_fwd_seqs"] for a in steps["arms"]]


def test_accelerate_launch_runs_the_same_job(one_rank, tmp_path):
    """`accelerate launch` starts the ranks instead of torchrun (`--multi_gpu` is its flag for several processes,
    on CPUs too); the run equals the one-rank run."""
    run = tmp_path / "accelerate"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    argv = [*launcher, "-m", "frost.cli", "train", "--steps", "2", "--run-dir", str(run), "--threads", "1",
            "--no-progress", *[a for s in SETTINGS for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [m for m in metrics(run) if "reward" in m]
    assert [m["world_size"] for m in rows] == [2, 2]
    assert_same_weights(adapter(run, 2), adapter(one_rank, 2))
