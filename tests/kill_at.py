"""`python tests/kill_at.py SITE N frost-args...`: run the frost CLI in this process and SIGKILL it at the N-th
arrival at SITE (after half a file or line is written where the site writes one), to test that a run killed anywhere
resumes. Sites: adapter, optimizer (a torn file in the checkpoint's temporary folder), rename (before the
temporary folder is renamed into place), latest (before `latest` is replaced), prune (while an old checkpoint is
deleted), append (half a metrics/samples line written), trim (a resume's log rewrite, before its rename)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import safetensors.torch
import torch

from frost.cli import main
from frost.run import runlog

SITE, N = sys.argv[1], int(sys.argv[2])
arrivals = 0


def arrive(site: str) -> bool:
    global arrivals
    if site != SITE:
        return False
    arrivals += 1
    return arrivals == N


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def torn(path: str | Path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    die()


real_save_file, real_torch_save, real_replace, real_rmtree = (
    safetensors.torch.save_file, torch.save, os.replace, shutil.rmtree
)  # fmt: skip
real_append = runlog.append


def save_file(tensors, filename, *args, **kwargs):
    real_save_file(tensors, filename, *args, **kwargs)
    if arrive("adapter"):
        torn(filename)


def torch_save(obj, f, *args, **kwargs):
    real_torch_save(obj, f, *args, **kwargs)
    if str(f).endswith("optimizer.pt") and arrive("optimizer"):
        torn(f)


def replace(src, dst, *args, **kwargs):
    name = Path(src).name
    if (name.startswith(".tmp-") and arrive("rename")) or (name == ".latest.tmp" and arrive("latest")):
        die()
    if name.endswith(".jsonl.tmp") and arrive("trim"):
        die()
    return real_replace(src, dst, *args, **kwargs)


def rmtree(path, *args, **kwargs):
    if Path(path).name.startswith(".trash-") and Path(path).exists() and arrive("prune"):
        for child in sorted(Path(path).iterdir())[:2]:  # part of the old checkpoint is gone when the kill comes
            child.unlink()
        die()
    return real_rmtree(path, *args, **kwargs)


def append(path, records):
    records = list(records)
    if records and arrive("append"):
        text = "".join(__import__("json").dumps(r) + "\n" for r in records)
        with Path(path).open("a") as f:
            f.write(text[: len(text) // 2])
        die()
    real_append(path, records)


safetensors.torch.save_file, torch.save, os.replace, shutil.rmtree = save_file, torch_save, replace, rmtree
runlog.append = append
sys.exit(main(sys.argv[3:]))
