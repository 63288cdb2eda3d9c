"""Commit the evidence runs' finished work from this checkout, in the order the experiment needs.

Run by ``scripts/evidence3.sh commit`` after its ``sync`` has copied the worktree's logs here. For each game folder
under ``results/evidence3``:

1. drop the copies of what is not finished (a run whose last progress event is not ``done``; a test reading of one
   checkpoint without its ``done.json``): the worktree keeps the originals, and a fresh clone must be able to
   rebuild the committed summary from what is committed;
2. rebuild the (sealed) summary with this checkout's ``frost experiment FILE --summary-only --md README.md`` (the
   README's Evidence block of the file too);
3. commit the logs, the summary, the README and every choice (``choices.json``, ``test/RUN/choice.json``);
4. then, in a commit of its own, the finished test readings: a choice is always committed before the test results
   that follow it (the issue's acceptance).

A machine here may be taken back between sessions with nothing kept but commits, so this runs after every run or
reading that finishes, not once at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from frost.analysis.experiment.runner import load_experiment, logged_done

RESULTS = Path("results/evidence3")


def drop_unfinished(game: Path, done: dict[str, int]) -> tuple[list[Path], list[Path]]:
    """Delete the copies of unfinished runs (not in ``done``, from ``logged_done``) and readings; returns (finished run
    folders, finished readings)."""
    runs: list[Path] = []
    for run in sorted((game / "runs").glob("*")):
        name = run.resolve().name  # a main run at the grid's seed is a link to its arm's chosen grid run
        if run.is_dir() and name in done:
            runs.append(run)
        elif run.is_dir():
            print(f"not committed (unfinished): {run}")
            run.unlink() if run.is_symlink() else shutil.rmtree(run)
    readings: list[Path] = []
    for step in sorted((game / "test").glob("*/step-*")):
        if (step / "done.json").exists():
            readings.append(step)
        else:
            print(f"not committed (reading unfinished): {step}")
            shutil.rmtree(step)
    return runs, readings


def git(*args: str) -> str:
    """Run git here and return its output."""
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def commit(paths: list[Path], message: str) -> None:
    """Stage ``paths`` (forced past .gitignore) and commit them when anything changed."""
    existing = [str(path) for path in paths if path.exists()]
    if not existing:
        return
    git("add", "-f", "--", *existing)
    if git("diff", "--cached", "--name-only", "--", *existing).strip():
        git("commit", "-q", "-m", message, "--", *existing)
        print(git("log", "--oneline", "-1").strip())


def main() -> None:
    """Commit every game's finished logs and choices, then its finished test readings."""
    python = sys.executable
    for game in sorted(path for path in RESULTS.iterdir() if (path / "progress.jsonl").exists()):
        experiment = Path(f"experiments/evidence3-{game.name}.yaml")
        runs, readings = drop_unfinished(game, logged_done(load_experiment(experiment)))
        summary = [python, "-m", "frost", "experiment", str(experiment), "--summary-only", "--md", "README.md"]
        subprocess.run(summary, check=True, stdout=subprocess.DEVNULL)
        logs = [game / name for name in ("progress.jsonl", "choices.json", "summary.json", "summary.md", "curves.png")]
        logs.append(Path("README.md"))  # its Evidence block for this file (tests/test_readme_evidence.py)
        choices = sorted((game / "test").glob("*/choice.json"))
        commit(
            logs + runs + choices,
            f"Evidence 3 ({game.name}): {len(runs)} finished runs' logs and the choices so far (synced)",
        )
        commit(readings, f"Evidence 3 ({game.name}): {len(readings)} finished test readings (after their choices)")


if __name__ == "__main__":
    main()
