"""Mutation check: alter each of 8 lines that matter and show that the test suite fails for each.

For each mutation the repository's tracked files are copied to a temporary folder, one line is changed there, and
the tests named for it run (`pytest -x`, the ones that should catch it; the whole suite would too, only slower).
A mutation is caught when those tests fail; the first failing test is recorded. A control row runs all those tests
on an unchanged copy first (they must pass there). The checkout itself is never changed. Writes
`results/mutation-check.json` and prints a Markdown table.

    .venv/bin/python scripts/mutation_check.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MUTATIONS = [
    {
        "name": "gate comparison",
        "file": "src/frost/proposal.py",
        "old": "admitted = flat_player[rows] > log_tau",
        "new": "admitted = flat_player[rows] > -math.inf",
        "what": "the player's gate pi(v) > tau dropped (every token admitted)",
        "tests": ["tests/test_frost.py"],
    },
    {
        "name": "strict >",
        "file": "src/frost/proposal.py",
        "old": "accept = best > parent_rewards",
        "new": "accept = best >= parent_rewards",
        "what": "a child equal to its parent replaces it",
        "tests": ["tests/test_frost.py", "tests/test_batched_step.py"],
    },
    {
        "name": "advantage mean",
        "file": "src/frost/losses.py",
        "old": "        return rewards - rewards.mean(dim=-1, keepdim=True)\n",
        "new": "        return rewards\n",
        "what": "the group mean no longer subtracted (A = r)",
        "tests": ["tests/test_grpo.py", "tests/test_losses.py"],
    },
    {
        "name": "KL reference",
        "file": "src/frost/losses.py",
        "old": "full_kl(policy_logprobs, reference_logprobs.detach())",
        "new": "full_kl(policy_logprobs, policy_logprobs.detach())",
        "what": "the KL taken to the policy itself instead of the frozen reference",
        "tests": ["tests/test_grpo.py"],
    },
    {
        "name": "shard scaling",
        "file": "src/frost/run/trainer.py",
        "old": "scale=1.0 / self.config.train.batch_size, timer=timer,",
        "new": "scale=1.0 / max(len(records), 1), timer=timer,",
        "what": "each rank divides by its local number of texts instead of the global B",
        "tests": ["tests/test_distributed.py::test_two_ranks_equal_one_rank_and_resume_on_one_rank"],
    },
    {
        "name": "all-reduce division",
        "file": "src/frost/run/distributed.py",
        "old": "        flat /= world.shard_size\n",
        "new": "        pass\n",
        "what": "the ranks of an FSDP group no longer divide the summed gradient by the group's size",
        "tests": ["tests/test_fsdp.py::test_two_ranks_sharing_one_base_equal_one_rank_and_resume_unsharded"],
    },
    {
        "name": "prefix-cache column",
        "file": "src/frost/judge_engine.py",
        "old": "index = (keep - starts.view(-1, 1) + first - 1)",
        "new": "index = (keep - starts.view(-1, 1) + first)",
        "what": "the judge's logits read one column off when moves run from the prefix KV cache",
        "tests": ["tests/test_batched_step.py"],
    },
    {
        "name": "left-padding position ids",
        "file": "src/frost/padding.py",
        "old": "return cls(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), lengths)",
        "new": "return cls(ids, mask, torch.arange(ids.shape[1]).expand_as(ids), lengths)",
        "what": "left-padded prompts numbered from the padding instead of from their first real token",
        "tests": ["tests/test_sampling.py", "tests/test_batched_step.py"],
    },
]


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_one(mutation: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="frost-mutant-") as tmp:
        copy = Path(tmp)
        tracked_copy(copy)
        path = copy / mutation["file"]
        text = path.read_text()
        if mutation["old"] and text.count(mutation["old"]) != 1:
            raise SystemExit(f"{mutation['name']}: the line to mutate is not found once in {mutation['file']}")
        if mutation["old"]:
            path.write_text(text.replace(mutation["old"], mutation["new"]))
        env = {**os.environ, "PYTHONPATH": str(copy / "src"), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation["tests"]]
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True)
        failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
        return {
            **{k: mutation[k] for k in ("name", "file", "what", "old", "new")},
            "caught": proc.returncode != 0,
            "failing_test": failed[0] if failed else None,
            "summary": (proc.stdout.strip().splitlines() or [""])[-1],
            "seconds": round(time.monotonic() - start, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of the mutations to run (default: all 8)")
    parser.add_argument("--out", default=str(ROOT / "results" / "mutation-check.json"))
    args = parser.parse_args()
    control = {"name": "control", "file": MUTATIONS[0]["file"], "old": "", "new": "", "what": "no change: the same "
               "tests pass in the copy", "tests": sorted({t for m in MUTATIONS for t in m["tests"]})}  # fmt: skip
    chosen = [m for m in [control, *MUTATIONS] if not args.only or m["name"] in args.only]
    rows = []
    for mutation in chosen:
        row = run_one(mutation)
        rows.append(row)
        verdict = (
            ("FAILED" if row["caught"] else "passed")
            if row["name"] == "control"
            else (f"caught by {row['failing_test']}" if row["caught"] else "NOT CAUGHT")
        )
        print(f"{row['name']}: {verdict} ({row['seconds']} s)", flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| mutation | what changes | caught by |\n| --- | --- | --- |")
    for row in rows:
        verdict = ("FAILED" if row["caught"] else "passed") if row["name"] == "control" else row["failing_test"]
        print(f"| {row['name']} | {row['what']} | {verdict or 'NOT CAUGHT'} |")


if __name__ == "__main__":
    main()
