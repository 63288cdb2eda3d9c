"""Offline mode: with HF_HUB_OFFLINE=1 and every socket blocked, the embedded model scores, a random-weight model
trains, and a hub id that is not cached gets one line; no process tries the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = """import os, socket

def _blocked(*args, **kwargs):
    with open(os.environ["FROST_NETWORK_LOG"], "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError("network blocked by the offline test")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
"""
TINY = """model: {name: qwen3-tiny-shape, device: cpu}
lora: {rank: 4, alpha: 8}
game: {move_length: 3}
data: {source: handwritten, validation_size: 2}
train: {K: 2, batch_size: 2, steps: 1, val_every: 1, val_documents: 2, val_samples: 2}
"""


def frost(tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp / "site"), str(ROOT / "src")]),
        "HF_HUB_OFFLINE": "1",
        "FROST_NETWORK_LOG": str(tmp / "network.log"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "frost.cli", *argv], env=env, capture_output=True, text=True, timeout=600, cwd=tmp
    )


def test_offline_mode_never_touches_the_network(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK)
    (tmp_path / "tiny.yaml").write_text(TINY)
    probe = "import socket\ntry:\n    socket.create_connection(('huggingface.co', 443))\nexcept OSError: pass"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "FROST_NETWORK_LOG": str(tmp_path / "network.log")}
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    assert (tmp_path / "network.log").read_text()  # the block is in force in every child
    (tmp_path / "network.log").unlink()
    pair = ["--begin", "Once upon a time", "--end", " there was a cat."]
    scored = frost(tmp_path, "score", *pair, "--move", " hi", "--threads", "1")
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert scored.stdout.startswith("reward: -") and "nats" in scored.stdout.splitlines()[0]
    trained = frost(tmp_path, "train", "--config", "tiny.yaml", "--run-dir", "run", "--no-progress", "--threads", "1")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    missing = frost(tmp_path, "score", *pair, "--move", " hi", "--model", "some-org/not-in-the-cache")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "cannot be reached" in missing.stderr
    assert not (tmp_path / "network.log").exists(), (tmp_path / "network.log").read_text()
