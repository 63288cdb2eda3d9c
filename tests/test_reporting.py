"""`train.report_to`: Weights & Biases (offline) and trackio (local) get every number of every step under TRL's names,
equal to metrics.jsonl, and the validation moves as a table; a resumed run continues its wandb run; a backend that
is not installed is one line. Each backend's own files are read back (wandb's .wandb log through its protobuf
records, trackio's SQLite store)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from frost.cli import main
from frost.run.metrics import read_metrics

TINY = """model: {name: qwen3-tiny-shape, device: cpu}
lora: {rank: 4, alpha: 8}
game: {move_length: 3}
data: {source: handwritten, validation_size: 2}
train: {K: 2, batch_size: 2, steps: 2, val_every: 2, val_samples: 2, val_documents: 2, checkpoint_every: 1}
"""
TRL_NAMES = ("reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "loss", "grad_norm", "learning_rate",
             "num_tokens", "completions/mean_length", "completions/min_length", "completions/max_length")  # fmt: skip


def train(tmp_path: Path, report_to: str, *extra: str) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY)
    run = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "tiny.yaml"), "--run-dir", str(run), "--no-progress", "--threads", "1"]
    assert main([*argv, "--set", f"train.report_to={report_to}", *extra]) == 0
    return run


def wandb_history(path: Path) -> list[dict]:
    """The history records of a .wandb file: a 7-byte header, then LevelDB-log records (32 KiB blocks; 7-byte record
    headers: CRC, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) holding wandb's protobuf `Record`s."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, rows, pending = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_gets_every_step_under_trls_names_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = train(tmp_path, "[jsonl,wandb]", "--steps", "1")
    run_id = (run / "wandb-run-id").read_text().strip()
    assert main(["train", "--config", str(tmp_path / "tiny.yaml"), "--run-dir", str(run), "--no-progress",
                 "--set", "train.report_to=[jsonl,wandb]", "--resume"]) == 0  # fmt: skip
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(run_id) for f in folders)  # one wandb run, continued
    history = [row for f in folders for row in wandb_history(next(f.glob("*.wandb")))]
    logged = {m["step"]: m for m in read_metrics(run / "metrics.jsonl") if "reward" in m}
    by_step = {int(r["_step"]): r for r in history if "reward" in r}
    assert sorted(by_step) == sorted(logged) == [1, 2]
    for step, metrics in logged.items():
        for name in TRL_NAMES:
            assert by_step[step][name] == pytest.approx(metrics[name], rel=1e-6), (step, name)
    tables = [r for r in history if r.get("val/moves/_type") == "table-file"]
    assert [int(r["_step"]) for r in tables] == [0, 1, 2]  # validation at step 0 and at each run's last step
    table = json.loads((folders[-1] / "files" / tables[-1]["val/moves/path"]).read_text())
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    want = [[2, s["doc"], m["text"], m["reward"]] for s in samples if s["step"] == 2 for m in s["moves"]]
    assert table["columns"] == ["step", "doc", "move", "reward"] and table["data"] == want


def test_trackio_locally_gets_every_step_and_the_validation_moves(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported: set it first
    monkeypatch.setenv("TRACKIO_PROJECT", "frost-test")
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported before TRACKIO_DIR was set")
    pytest.importorskip("trackio")
    run = train(tmp_path, "[jsonl,trackio]")
    with sqlite3.connect(tmp_path / "trackio" / "frost-test.db") as db:
        rows = [(step, json.loads(blob)) for step, blob in db.execute("select step, metrics from metrics")]
    logged = {m["step"]: m for m in read_metrics(run / "metrics.jsonl") if "reward" in m}
    got = {step: values for step, values in rows if "reward" in values}
    assert sorted(got) == [1, 2]
    for step, metrics in logged.items():
        assert {k: got[step][k] for k in TRL_NAMES} == pytest.approx({k: metrics[k] for k in TRL_NAMES}, rel=1e-6)
    tables = [values["val/moves"] for _, values in rows if "val/moves" in values]
    assert len(tables) == 2 and {row["step"] for row in tables[-1]["_value"]} == {2}


def test_a_backend_that_is_not_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    (tmp_path / "tiny.yaml").write_text(TINY)
    argv = ["train", "--config", str(tmp_path / "tiny.yaml"), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--set", "train.report_to=[jsonl,wandb]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.report_to" in err[0] and "frost-training[wandb]" in err[0]
