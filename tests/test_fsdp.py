"""FSDP2 of the frozen base (`model.fsdp_shards`) with real processes: gloo ranks under torchrun on a tiny model.

2 ranks sharing one base (one group), and 4 ranks in 2 groups of 2 (texts split over the groups), equal a one-rank
run after 2 steps (LoRA weights and logged metrics); each rank holds half of every decoder layer; a sharded run's
checkpoint resumes on one unsharded rank; ranks of a group that played differently stop the run naming them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from frost.run.distributed import DistributedError, World, gather, shard
from frost.run.memplan import ModelShape
from frost.shapes import SHAPES
from test_distributed import ROOT, SAME, SETTINGS, adapter, assert_same_weights, metrics, train

# Frost with a gate low enough that the tiny random model's children pass it (children are scored every step)
FROST = ["--set", "train.algorithm=frost", "--set", "frost.tau=1e-9"]
SHARDED = ["--set", "model.fsdp_shards=2"]
COUNTS = ("judge_fwd_seqs", "judge_bwd_seqs", "player_fwd_seqs", "tokens")


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fsdp-one") / "run"
    train(run, 3, 1, *FROST)
    return run


def assert_same_run(run: Path, reference: Path, steps: int) -> None:
    assert_same_weights(adapter(run, steps), adapter(reference, steps))
    got = [m for m in metrics(run) if "reward" in m]
    want = [m for m in metrics(reference) if "reward" in m][:steps]
    assert [m["step"] for m in got] == list(range(1, steps + 1))
    for a, b in zip(got, want, strict=True):
        for key in SAME:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
        for key in COUNTS:
            assert a[key] == b[key], key
    assert want[0]["judge_fwd_seqs"] > 8  # 4 texts x K=2 parents, and children
    val_got = [m["val/best_of_2"] for m in metrics(run) if "val/best_of_2" in m]
    val_want = [m["val/best_of_2"] for m in metrics(reference) if "val/best_of_2" in m][: steps + 1]
    assert val_got == pytest.approx(val_want, rel=1e-4, abs=1e-4)


def test_two_ranks_sharing_one_base_equal_one_rank_and_resume_unsharded(one_rank, tmp_path):
    run = tmp_path / "sharded"
    train(run, 2, 2, *FROST, *SHARDED)
    assert_same_run(run, one_rank, 2)
    last = [m for m in metrics(run) if "reward" in m][-1]
    assert last["fsdp/shards"] == 2 and last["world_size"] == 2
    assert last["fsdp/layer_bytes_per_rank"] * 2 == last["fsdp/layer_bytes"] > 0  # half of every layer per rank
    shape = ModelShape.from_config(SHAPES["qwen3-tiny"])  # the memory plan counts the same layer weights
    assert last["fsdp/layer_bytes"] == 4 * shape.num_hidden_layers * shape.block_parameters()
    train(run, 3, 1, *FROST, "--resume")  # the sharded run's checkpoint on one rank holding the whole base
    assert_same_weights(adapter(run, 3), adapter(one_rank, 3))


def test_an_unsharded_checkpoint_resumes_on_a_sharded_group(one_rank, tmp_path):
    run = tmp_path / "unsharded-first"
    train(run, 2, 1, *FROST)
    train(run, 3, 2, *FROST, *SHARDED, "--resume")
    assert_same_weights(adapter(run, 3), adapter(one_rank, 3))
    assert [m["step"] for m in metrics(run) if "reward" in m] == [1, 2, 3]


def test_two_groups_of_two_ranks_equal_one_rank(one_rank, tmp_path):
    run = tmp_path / "replicas"
    train(run, 2, 4, *FROST, *SHARDED)
    assert_same_run(run, one_rank, 2)
    # only one rank per group reported: 2 groups x 2 texts, no duplicates in the samples
    assert len((run / "samples.jsonl").read_text().splitlines()) == 3 * 3


def test_groups_split_the_texts_and_their_ranks_share_them():
    worlds = [World(rank=r, size=4, shard_size=2) for r in range(4)]
    parts = [list(range(5))[shard(5, w)] for w in worlds]
    assert parts[0] == parts[1] == [0, 1, 2] and parts[2] == parts[3] == [3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _disagreeing_rank(rank: int, port: int, results: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    world = World(rank=rank, size=2, shard_size=2)
    try:
        same = gather({"moves": [1, 2]}, world)
        gather({"moves": [1, 2 + rank]}, world)
        results.put((rank, len(same), "no error"))
    except DistributedError as exc:
        results.put((rank, len(same), str(exc)))
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_of_a_group_that_played_differently_stop_the_run():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_disagreeing_rank, args=(r, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    out = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for rank, agreed, message in out:
        assert agreed == 1  # one record per group when the ranks agree
        assert message.startswith("rank 1 and rank 0 share one copy of the base"), (rank, message)


def test_the_step_bench_shards_the_base_under_torchrun(tmp_path):
    """`frost bench --only steps --fsdp-shards 2` under torchrun: every arm runs on a freshly sharded base and does
    the work of a one-process bench (the same judge forwards)."""
    import json
    import subprocess
    import sys

    from test_distributed import ROOT

    bench = ["-m", "frost.cli", "bench", "--only", "steps", "--model", "qwen3-tiny-shape", "--device", "cpu",
             "--K", "2", "--L", "3", "--B", "3", "--repeats", "1", "--rules", "taylor-gated", "--no-naive",
             "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    sharded = [*bench, "--fsdp-shards", "2", "--out", str(tmp_path / "B.md"), "--json", str(tmp_path / "b.json")]
    proc = subprocess.run([*launcher, *sharded], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = [sys.executable, *bench, "--out", str(tmp_path / "ONE.md"), "--json", str(tmp_path / "one.json")]
    proc = subprocess.run(single, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (steps,) = json.loads((tmp_path / "b.json").read_text())["steps"]
    (one,) = json.loads((tmp_path / "one.json").read_text())["steps"]
    assert steps["fsdp_shards"] == 2 and steps["world_size"] == 2 and len(steps["arms"]) == 3
    assert [a["judge_fwd_seqs"] for a in steps["arms"]] == [a["judge_fwd_seqs"] for a in one["arms"]]
    assert [a["judge_bwd_seqs"] for a in steps["arms"]] == [a["judge_bwd_seqs"] for a in one["arms"]]


def test_a_model_without_decoder_layers_cannot_be_sharded():
    from frost.errors import ConfigError
    from frost.run.fsdp import decoder_layers

    with pytest.raises(ConfigError, match=r"model\.fsdp_shards: Linear has no decoder"):
        decoder_layers(torch.nn.Linear(2, 2))
    from conftest import make_tiny_llama

    assert len(decoder_layers(make_tiny_llama())) == make_tiny_llama().config.num_hidden_layers


def test_ranks_of_a_group_agree_on_pass_sizes_and_back_off_together(one_rank, tmp_path):
    """Rank 1 proposes half the micro-batch and runs out of memory at its first judge and loss passes; the group
    agrees (an all-reduce over its ranks) on the smaller sizes and backs off together: no hang, the one-rank run's
    result."""
    run = tmp_path / "uneven"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    settings = [a for s in SETTINGS for a in ("--set", s)]
    argv = [*launcher, str(ROOT / "tests" / "uneven_ranks.py"), "train", "--steps", "2", "--run-dir", str(run),
            "--threads", "1", "--no-progress", *settings, *FROST, *SHARDED]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "FROST_DIST_TIMEOUT": "60"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks backed off, each from its own warning (rank 0 never ran out of memory itself)
    assert proc.stderr.count("judge: out of memory at") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("loss: out of memory at 2 texts per pass; continuing with 1") == 2, proc.stderr[-3000:]
    assert_same_run(run, one_rank, 2)
