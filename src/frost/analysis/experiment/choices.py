"""An experiment's choices made on the dev texts and its one final test phase.

An experiment file may add, beside its arms and seeds:

    grid: {field: optim.lr, values: [3.0e-5, 1.0e-4], seed: 0}   # every arm trains once per value at this seed
    choose: {last: 3}                  # each arm's value: the best mean dev best-of-N over a run's last 3 validations
    baselines: [grpo-k8, grpo-k8-passk]                    # the test phase compares every other arm with each
    test: {samples: 8}                                     # best-of-N of the chosen checkpoints on the test split

and the data overrides that declare the splits (`data.validation_size` dev texts, `data.test_start`/`test_size`
test texts) with `train.keep_adapters: true`. The experiment then runs in phases:

1. the grid: `OUT/runs/ARM-G{i}-seedS` for each value i of the grid field, at the grid seed;
2. each arm's choice, once its grid runs are finished, by the rule of `choose` (ties: the first value listed), written
   to `OUT/choices.json`; the arm's run at the grid seed is its grid run at the chosen value (`OUT/runs/ARM-seedS`
   is a link to it) and its other seeds train at that value;
3. once every run is finished, each run's checkpoints for the test: the last step and its best dev step (the
   validation step with the highest best-of-N; ties: the earliest), added to `choices.json`, which is then complete;
4. `frost experiment FILE --test` (only then, and only with `choices.json` complete): `frost evaluate` of every
   chosen checkpoint on the test split into `OUT/test/RUN/step-N/`, each recording the SHA-256 of the
   `choices.json` it used. Nothing before this phase reads the test split.

With `test: {samples: 8, when: each-run}` step 4 has no phase of its own: each main run (an arm's chosen grid run,
its other seeds) is read on test as soon as it is finished, by the worker that trained it, once its checkpoints
are chosen (step 3's rule, from its own dev log) and written to `choices.json` and `OUT/test/RUN/choice.json`; each
reading records that file's SHA-256 and counts only while it equals the run's final choice; no test result is shown
before every choice is made. For machines that keep nothing between sessions (a run's adapters would not live until
a final phase); a run whose logs say it finished stays finished on a new machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frost.analysis.stats import mean_ci, paired_summary
from frost.errors import ConfigError
from frost.run import runlog
from frost.run.metrics import read_metrics

CHECKPOINT_KINDS = ("last", "best_dev")
TEST_WHEN = ("end", "each-run")
"""When the test split is read: in one phase after every choice, or each main run as soon as it is finished."""


@dataclass(frozen=True)
class Grid:
    """One config field trained at several values, at one seed."""

    field: str
    values: tuple[Any, ...]
    seed: int = 0


@dataclass(frozen=True)
class ChoiceRule:
    """How a grid value is chosen: the highest mean dev best-of-N over a run's last `last` validations."""

    last: int = 3

    def describe(self, field: str) -> str:
        """The rule in words, for `choices.json` and the summary (`field`: the grid's field)."""
        return (
            f"for each arm, the {field} whose grid run has the highest mean dev best-of-N over its last {self.last} "
            "validation steps (ties: the first value listed); each run's best dev step is its validation step with "
            "the highest dev best-of-N (ties: the earliest)"
        )


@dataclass(frozen=True)
class TestPhase:
    """The test phase: `samples` moves per test text at each chosen checkpoint."""

    samples: int = 8
    each_run: bool = False
    """`when: each-run`: each main run's chosen checkpoints are read on test as soon as that run is finished, by the
    process that trained it, under the choices that run depends on (written first); the summary shows no test
    result until every choice is made. For machines that keep nothing between sessions, where the adapters would
    not live until a final phase. `when: end` (the default): one phase after every choice (`--test`)."""


def parse_grid(value: Any) -> Grid | None:
    """Check `experiment.grid` (one-line errors naming the field)."""
    if value is None:
        return None
    where = "experiment.grid"
    if not isinstance(value, dict) or set(value) - {"field", "values", "seed"} or "field" not in value:
        raise ConfigError(f"{where}: give {{field: optim.lr, values: [3.0e-5, 1.0e-4], seed: 0}}")
    field, values, seed = value["field"], value.get("values"), value.get("seed", 0)
    if not isinstance(field, str) or "." not in field:
        raise ConfigError(f"{where}.field: give a config field, e.g. optim.lr")
    if not isinstance(values, list) or len(values) < 2 or len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(f"{where}.values: give at least two different values, e.g. [3.0e-5, 1.0e-4]")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}.seed: give an integer seed")
    return Grid(field, tuple(values), seed)


def parse_choose(value: Any) -> ChoiceRule:
    """Check `experiment.choose`."""
    if value is None:
        return ChoiceRule()
    last = value.get("last") if isinstance(value, dict) and not set(value) - {"last"} else None
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ConfigError("experiment.choose: give {last: N}, N >= 1 (validations averaged at the end of a run)")
    return ChoiceRule(last)


def parse_test(value: Any) -> TestPhase | None:
    """Check `experiment.test`."""
    if value is None:
        return None
    known = {"samples", "when"}
    samples = value.get("samples", 8) if isinstance(value, dict) and not set(value) - known else None
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError("experiment.test: give {samples: N}, N >= 1 (moves per test text), and optionally when")
    when = value.get("when", "end")
    if when not in TEST_WHEN:
        raise ConfigError(f"experiment.test.when: give {' or '.join(TEST_WHEN)} (got {when!r})")
    return TestPhase(samples, each_run=when == "each-run")


def grid_run_name(arm: str, index: int, seed: int) -> str:
    """The folder name of an arm's grid run at the grid's value `index`."""
    return f"{arm}-G{index}-seed{seed}"


def validations(run_dir: Path) -> list[tuple[int, float]]:
    """(step, dev best-of-N) of each validation a run logged, in order."""
    out = []
    for row in read_metrics(run_dir / "metrics.jsonl"):
        key = next((k for k in row if k.startswith("val/best_of_")), None)
        if key is not None:
            out.append((int(row["step"]), float(row[key])))
    return out


def grid_score(run_dir: Path, rule: ChoiceRule) -> float:
    """The rule's score of one grid run: its mean dev best-of-N over its last `rule.last` validations."""
    vals = validations(run_dir)[-rule.last :]
    return statistics.fmean(v for _, v in vals) if vals else float("nan")


def choose_value(scores: list[float]) -> int:
    """The index of the best finite score (the first among equals)."""
    finite = [(s, -i) for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise ConfigError("experiment.choose: no grid run has a finite dev best-of-N to choose by")
    return -max(finite)[1]


def best_dev_step(run_dir: Path) -> tuple[int, float]:
    """A run's validation step with the highest dev best-of-N (the earliest among equals), and that value."""
    vals = validations(run_dir)
    if not vals:
        raise ConfigError(f"{run_dir}: no validation logged, so no best dev step; validate during training")
    best = max(v for _, v in vals)
    return next((s, v) for s, v in vals if v == best)


def read_choices(out: Path) -> dict[str, Any]:
    """`OUT/choices.json`, or an empty record."""
    path = out / "choices.json"
    if not path.is_file():
        return {"arms": {}, "checkpoints": {}, "complete": False}
    return dict(json.loads(path.read_text()))


def write_choices(out: Path, choices: dict[str, Any]) -> None:
    """Rewrite `OUT/choices.json` atomically."""
    tmp = out / f"choices.tmp-{os.getpid()}.json"
    tmp.write_text(json.dumps(choices, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / "choices.json")


def link_chosen_run(runs: Path, arm: str, seed: int, grid_name: str, keep_run: bool = False) -> None:
    """Make `runs/ARM-seedS` a relative link to the chosen grid run (the arm's run at the grid seed); with
    `keep_run`, a run already trained there in its own folder stays (`when: each-run` trains the arm's run at the
    grid seed again when the grid run's adapters were lost before its test reading)."""
    link = runs / f"{arm}-seed{seed}"
    if link.is_symlink() and os.readlink(link) == grid_name:
        return
    if keep_run and link.is_dir() and not link.is_symlink():
        return
    if link.exists() and not link.is_symlink():
        raise ConfigError(f"{link} already holds a run; the grid's chosen run would take its place: move it away")
    tmp = runs / f".link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(grid_name)
    os.replace(tmp, link)


def test_folder(out: Path, run: str, step: int) -> Path:
    """Where the test phase writes one checkpoint's results."""
    return out / "test" / run / f"step-{step:07d}"


def run_choice(choices: dict[str, Any], arm: str, run: str) -> dict[str, Any]:
    """What one run's test reading depends on (`when: each-run`): its arm's grid choice (None without a grid) and
    its chosen checkpoints."""
    return {"run": run, "arm": arm, "arm_choice": choices["arms"].get(arm), "checkpoints": choices["checkpoints"][run]}


def run_choice_text(choice: dict[str, Any]) -> str:
    """The file text of a run's choice (`OUT/test/RUN/choice.json`), the same for the same choice."""
    return json.dumps(choice, indent=1, sort_keys=True) + "\n"


def text_sha256(text: str) -> str:
    """The SHA-256 of a text's UTF-8 bytes (what `--record` records of a file holding it)."""
    return hashlib.sha256(text.encode()).hexdigest()


def test_best(out: Path, run: str, step: int, digest: str | None = None) -> dict[str, dict[str, Any]] | None:
    """Per test text of one evaluated checkpoint: its best move (text, reward) and the shown text; None if the
    checkpoint was not evaluated, or (with `digest`, the SHA-256 of the current choices.json) if it was evaluated
    under other choices (a stale result)."""
    folder = test_folder(out, run, step)
    path = folder / "samples.jsonl"
    if not path.is_file() or not (folder / "done.json").is_file():
        return None
    if digest is not None:
        recorded = json.loads((folder / "summary.json").read_text()).get("record_sha256")
        if recorded != digest:
            return None
    best = {}
    for row in runlog.read(path):
        move = max(row["moves"], key=lambda m: m["reward"])
        parts = row.get("shown_parts")  # results written before it was recorded have only `shown`
        best[row["doc"]] = {"text": move["text"], "reward": move["reward"], "shown": row["shown"], "parts": parts}
    return best


def verdict(over_seeds: dict[str, float]) -> str:
    """The experiment files' rule for a win: the mean over seeds above 0 and its 95% t interval excluding 0 ("win"),
    below 0 and excluding 0 ("loss"), otherwise "no difference shown" (also with fewer than two seeds)."""
    mean, half = over_seeds.get("mean", math.nan), over_seeds.get("ci95", math.nan)
    if over_seeds.get("n", 0) < 2 or not math.isfinite(mean) or not math.isfinite(half):
        return "no difference shown"
    if mean - half > 0:
        return "win"
    if mean + half < 0:
        return "loss"
    return "no difference shown"


def best_baseline(choices: dict[str, Any], baselines: list[str], seeds: dict[str, list[int]]) -> str | None:
    """The baseline each arm is finally read against, fixed on the dev texts before the test: the one whose runs
    have the highest mean dev best-of-N at their best dev steps (ties: the first listed); None without choices."""
    chosen = choices.get("checkpoints", {})
    scores = []
    for i, name in enumerate(baselines):
        values = [chosen[f"{name}-seed{s}"]["best_dev_value"] for s in seeds[name] if f"{name}-seed{s}" in chosen]
        if values:
            scores.append((statistics.fmean(values), -i, name))
    return max(scores)[2] if scores else None


def arm_reading(
    best: Callable[[str, int, str], dict[str, dict[str, Any]] | None], arm: str, seeds: list[int], kind: str
) -> dict[str, Any]:
    """One arm's test reading at one checkpoint kind over its seeds (`best`: a run's best moves per test text):
    best-of-N and the near-copy rates of its best moves, each a mean over seeds with a 95% t interval."""
    from frost.games import is_near_copy

    means, copies, any_part = [], [], []
    for seed in seeds:
        found = best(arm, seed, kind)
        if found:
            means.append(statistics.fmean(x["reward"] for x in found.values()))
            copies.append(statistics.fmean(is_near_copy(x["text"], x["shown"]) for x in found.values()))
            if all(x["parts"] is not None for x in found.values()):
                any_part.append(statistics.fmean(
                    any(is_near_copy(x["text"], t) for t in x["parts"]) for x in found.values()
                ))  # fmt: skip
    return {
        "best_of_n": mean_ci(means), "near_copy": mean_ci(copies), "near_copy_any_part": mean_ci(any_part),
        "seeds": len(means), "seeds_expected": len(seeds),
    }  # fmt: skip


def test_summary(
    out: Path,
    choices: dict[str, Any],
    arms: list[str],
    baselines: list[str],
    seeds: dict[str, list[int]],
    each_run: bool = False,
) -> dict[str, Any]:
    """The test phase's statistics: per arm and checkpoint kind, best-of-N over test texts (mean over seeds with a
    95% t interval) and the near-copy rate of the best moves (of the copy metric's text, the rule's reading; and of
    any part of the document the player was shown, beside it); per arm against each baseline and checkpoint kind, the
    difference per test text and seed, its mean per seed and a t interval over seeds, wins / losses / ties and the
    verdict of `verdict`; the same on the texts where neither best move is a near-copy of the shown text; and the
    wins whose best move is a near-copy of the baseline's best move. Only results evaluated under the current
    choices.json count (its hash is compared with each result's; with `each_run`, the hash of the run's own choice,
    `run_choice`); seeds without one are named in `missing`, and
    every count of seeds is reported against the seeds expected. `best_baseline`: the baseline of the headline."""
    from frost.games import NEAR_COPY, copy_fraction, is_near_copy
    from frost.run.evaluation import file_sha256

    whole = file_sha256(out / "choices.json") if (out / "choices.json").is_file() else None
    missing: list[str] = []

    @functools.cache
    def best(arm: str, seed: int, kind: str) -> dict[str, dict[str, Any]] | None:
        """One checkpoint's test result, read once however many tables use it."""
        run = f"{arm}-seed{seed}"
        step = choices.get("checkpoints", {}).get(run, {}).get(kind)
        # read each run as it finished: the result counts under the run's own choice as it stands now
        digest = text_sha256(run_choice_text(run_choice(choices, arm, run))) if each_run and step is not None else whole
        found = None if step is None else test_best(out, run, int(step), digest)
        if found is None:
            missing.append(f"{run} ({kind})")
        return found

    per_arm = {arm: {kind: arm_reading(best, arm, seeds[arm], kind) for kind in CHECKPOINT_KINDS} for arm in arms}
    pairs: list[dict[str, Any]] = []
    for baseline in baselines:
        for arm in arms:
            if arm == baseline:
                continue
            for kind in CHECKPOINT_KINDS:
                expected = sorted(set(seeds[arm]) & set(seeds[baseline]))
                diffs, per_seed, clean, clean_per_seed, variants = [], [], [], [], 0
                for seed in expected:
                    mine, theirs = best(arm, seed, kind), best(baseline, seed, kind)
                    if not mine or not theirs:
                        continue
                    docs = sorted(mine.keys() & theirs.keys())
                    if not docs:
                        continue
                    d = [mine[x]["reward"] - theirs[x]["reward"] for x in docs]
                    per_seed.append({"seed": seed, "mean": statistics.fmean(d), "n": len(d)})
                    diffs += d
                    kept = [
                        dx for x, dx in zip(docs, d, strict=True)
                        if not is_near_copy(mine[x]["text"], mine[x]["shown"])
                        and not is_near_copy(theirs[x]["text"], theirs[x]["shown"])
                    ]  # fmt: skip
                    if kept:
                        clean_per_seed.append({"seed": seed, "mean": statistics.fmean(kept), "n": len(kept)})
                        clean += kept
                    variants += sum(
                        dx > 0 and copy_fraction(mine[x]["text"], theirs[x]["text"]) >= NEAR_COPY
                        for x, dx in zip(docs, d, strict=True)
                    )
                if not diffs:
                    continue
                summary = paired_summary(diffs, per_seed)
                no_copy = paired_summary(clean, clean_per_seed)
                pairs.append(
                    {
                        "arm": arm,
                        "against": baseline,
                        "checkpoint": kind,
                        **summary,
                        "seeds_expected": len(expected),
                        "verdict": verdict(summary["over_seeds"]),
                        "no_copy": {**no_copy, "verdict": verdict(no_copy["over_seeds"])},
                        "wins_near_copy_of_baseline": variants,
                    }
                )
    return {
        "arms": per_arm,
        "pairs": pairs,
        "best_baseline": best_baseline(choices, baselines, seeds),
        "choices_sha256": whole,
        "each_run": each_run,
        "missing": missing,
    }
