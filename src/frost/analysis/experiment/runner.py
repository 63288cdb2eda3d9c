"""`frost experiment FILE`: arms x seeds of training runs, resumable, with the statistics a comparison needs.

An experiment file (YAML) names the arms (each a config file plus overrides), the seeds, overrides shared by every
arm, and the arm the others are compared with:

    out: results/evidence
    seeds: [0, 1, 2]
    set: {train.steps: 48, train.val_every: 8}
    reference: grpo-k8
    arms:
      grpo-k8: {config: configs/cpu-demo-grpo.yaml}
      frost-k4-judge-gated: {config: configs/cpu-demo-frost.yaml, set: {frost.rule: judge-gated}}
      grpo-k4: {config: configs/cpu-demo-grpo.yaml, set: {train.K: 4}, seeds: [0]}

Runs go to `OUT/runs/ARM-seedS`, seed by seed (every arm's seed 0 first). A finished run is skipped, an interrupted
one resumes from its latest checkpoint (written every step unless the file says otherwise), so a killed experiment
loses at most the step in progress. Each step is appended to `OUT/progress.jsonl`; after every run
`OUT/summary.json` and `OUT/summary.md` are rewritten: per arm and validation step, the mean over seeds of best-of-8
and mean reward with a 95% confidence interval (Student t over seeds); per arm against the reference, the paired
difference of best-of-8 per validation text at the last common validation step (same text, same seed), mean +-
standard error, the number of texts won, lost and tied, and the mean per seed with the number of seeds won and a 95%
t interval over the seeds' means (the seed as the unit); judge forward sequences and wall time per run. Only
finished runs count; unfinished ones (the last event of the run in `progress.jsonl` is not "done") are listed apart.

Several processes may run one experiment file at once (one per GPU, or one per core group): each claims a run (an
exclusive lock on `OUT/claims/ARM-seedS`) before training it and skips runs another live worker holds, so every
run is trained once; the system releases the lock of a worker that ends, however it ends.

An optional `final` block runs diagnostics at the final checkpoints once a seed's runs are finished (Appendix D of
each arm against the reference, the selection experiment at every player): `frost.analysis.experiment.final`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frost.analysis.experiment.choices import (
    CHECKPOINT_KINDS,
    ChoiceRule,
    Grid,
    TestPhase,
    best_dev_step,
    choose_value,
    grid_run_name,
    grid_score,
    link_chosen_run,
    parse_choose,
    parse_grid,
    parse_test,
    read_choices,
    run_choice,
    run_choice_text,
    test_summary,
    validations,
    write_choices,
)
from frost.analysis.experiment.final import (
    DiagnosticPaused,
    FinalDiagnostics,
    diagnostic_commands,
    final_markdown,
    is_done,
    parse_final,
    run_diagnostics,
    summarize_final,
)
from frost.analysis.stats import mean_ci, paired_summary, pm
from frost.errors import ConfigError, read_yaml_file
from frost.run import claims, runlog
from frost.run.checkpoint import finished_step
from frost.run.metrics import read_metrics

EXPERIMENT_KEYS = {"out", "seeds", "set", "reference", "arms", "final", "grid", "choose", "test", "baselines"}
ARM_KEYS = {"config", "set", "seeds"}
RUN_EVENTS = {"start", "resume", "step", "paused", "done"}
"""The events of a run in `progress.jsonl` (the final diagnostics log others)."""


@dataclass
class Arm:
    """One arm: a config file and overrides."""

    name: str
    config: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None
    """This arm's seeds (None: the experiment's)."""


@dataclass
class Experiment:
    """A parsed experiment file."""

    out: Path
    seeds: list[int]
    arms: list[Arm]
    overrides: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    final: FinalDiagnostics | None = None
    """Diagnostics at the final checkpoints (`frost.analysis.experiment.final`)."""
    grid: Grid | None = None
    """A field every arm trains at several values at one seed before the others (`choices`)."""
    choose: ChoiceRule = field(default_factory=ChoiceRule)
    test: TestPhase | None = None
    baselines: list[str] = field(default_factory=list)
    name: str = ""
    """The experiment file's name without its suffix: names its block in a Markdown file (`--md`), so two files
    whose `out` folders share a last name (results/evidence2/infilling, results/evidence3/infilling) keep two blocks."""

    def runs(self) -> list[tuple[Arm, int, Path]]:
        """(arm, seed, run folder), seed-major."""
        seeds = sorted({s for a in self.arms for s in (a.seeds or self.seeds)})
        return [
            (arm, seed, self.out / "runs" / f"{arm.name}-seed{seed}")
            for seed in seeds
            for arm in self.arms
            if seed in (arm.seeds or self.seeds)
        ]


def _seeds(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) for s in value):
        raise ConfigError(f"{where}: give a non-empty list of integer seeds, e.g. [0, 1, 2]")
    return list(value)


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and "." in k for k in value):
        raise ConfigError(f"{where}: give a mapping of config fields, e.g. {{train.steps: 48}}")
    return dict(value)


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file (one-line errors naming the field)."""
    path = Path(path)
    data = read_yaml_file(path, "experiment", missing=f"experiment: {path} does not exist")
    if not isinstance(data, dict):
        raise ConfigError(f"experiment: {path} must hold a mapping (out, seeds, set, reference, arms)")
    unknown = set(data) - EXPERIMENT_KEYS
    if unknown:
        raise ConfigError(
            f"experiment: unknown field {sorted(unknown)[0]!r}; known: {', '.join(sorted(EXPERIMENT_KEYS))}"
        )
    arms_data = data.get("arms")
    if not isinstance(arms_data, dict) or not arms_data:
        raise ConfigError("experiment.arms: give a mapping of arm names to {config: FILE, set: {...}}")
    base = path.parent
    arms = []
    for name, spec in arms_data.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"experiment.arms.{name}: give a mapping with config and set")
        extra = set(spec) - ARM_KEYS
        if extra:
            raise ConfigError(f"experiment.arms.{name}: unknown field {sorted(extra)[0]!r}; known: config, set, seeds")
        config = spec.get("config")
        config_path = None
        if config is not None:
            config_path = Path(config) if Path(config).is_file() else base / config
            if not config_path.is_file():
                raise ConfigError(f"experiment.arms.{name}.config: {config} does not exist")
        arm_seeds = _seeds(spec["seeds"], f"experiment.arms.{name}.seeds") if "seeds" in spec else None
        arms.append(Arm(str(name), config_path, _overrides(spec.get("set"), f"experiment.arms.{name}.set"), arm_seeds))
    reference = data.get("reference")
    if reference is not None and reference not in arms_data:
        raise ConfigError(f"experiment.reference: {reference!r} is not an arm ({', '.join(map(str, arms_data))})")
    final = parse_final(data.get("final"))
    if final is not None and final.samples is not None and reference is None:
        raise ConfigError("experiment.final.samples: compares each arm with the reference; name one (reference: ARM)")
    out = data.get("out")
    if not isinstance(out, str) or not out:
        raise ConfigError("experiment.out: give the output folder")
    grid = parse_grid(data.get("grid"))
    baselines = data.get("baselines", [])
    if not isinstance(baselines, list) or any(b not in arms_data for b in baselines):
        raise ConfigError(f"experiment.baselines: give a list of arms ({', '.join(map(str, arms_data))})")
    test = parse_test(data.get("test"))
    if test is not None and not baselines:
        raise ConfigError("experiment.test: compares the arms with the baselines; name them (baselines: [ARM, ...])")
    return Experiment(
        out=Path(out),
        seeds=_seeds(data.get("seeds", [0]), "experiment.seeds"),
        arms=arms,
        overrides=_overrides(data.get("set"), "experiment.set"),
        reference=reference,
        final=final,
        grid=grid,
        choose=parse_choose(data.get("choose")),
        test=test,
        baselines=list(baselines),
        name=path.stem,
    )


class ExperimentPaused(Exception):
    """A stop signal ended a run early; its checkpoint is saved and the same command resumes the experiment."""


def arm_config(experiment: Experiment, arm: Arm, seed: int, run_dir: Path, extra: dict[str, Any] | None = None) -> Any:
    """The validated config of one run: the arm's file, the experiment's overrides, the arm's, `extra` (a grid
    value), seed and folder."""
    from frost.config import load_config

    values = {"train.checkpoint_every": 1, **experiment.overrides, **arm.overrides, **(extra or {})}
    values |= {"train.seed": seed, "train.run_dir": str(run_dir)}
    return load_config(arm.config, [f"{k}={json.dumps(v)}" for k, v in values.items()])


@dataclass
class PlannedRun:
    """A run the experiment trains: its arm, the name it logs under, seed, folder and grid value (if any)."""

    arm: Arm
    name: str
    seed: int
    run_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


def planned_runs(experiment: Experiment) -> list[PlannedRun]:
    """The runs to train now: without a grid, every (arm, seed); with one, every arm's grid runs, then the other
    seeds of each arm whose value is chosen (`choices.json`)."""
    runs_dir = experiment.out / "runs"
    grid = experiment.grid
    if grid is None:
        return [PlannedRun(arm, arm.name, seed, run_dir) for arm, seed, run_dir in experiment.runs()]
    plan = []
    for arm in experiment.arms:
        for i, value in enumerate(grid.values):
            name = grid_run_name(arm.name, i, grid.seed)
            plan.append(PlannedRun(arm, f"{arm.name}-G{i}", grid.seed, runs_dir / name, {grid.field: value}))
    chosen = read_choices(experiment.out)["arms"]
    for arm, seed, run_dir in experiment.runs():
        if seed != grid.seed and arm.name in chosen:
            plan.append(PlannedRun(arm, arm.name, seed, run_dir, {grid.field: chosen[arm.name]["value"]}))
    return plan


def update_choices(experiment: Experiment) -> dict[str, Any]:
    """Make the choices the finished runs allow (`choices`): each arm's grid value once its grid
    runs are finished (and the link to its chosen run), then every run's checkpoints once all runs are finished
    (with `test: {when: each-run}`, each run's checkpoints are chosen as it is read on test: `_test_run`)."""
    with claims.locked(experiment.out / "claims" / "choices.lock"):
        return _update_choices(experiment)


def _update_choices(experiment: Experiment) -> dict[str, Any]:
    grid = experiment.grid
    choices = read_choices(experiment.out)
    if grid is None:
        return choices
    each_run = experiment.test is not None and experiment.test.each_run
    runs_dir = experiment.out / "runs"
    done = logged_done(experiment)
    changed = False
    for arm in experiment.arms:
        if arm.name in choices["arms"]:
            continue
        dirs = [runs_dir / grid_run_name(arm.name, i, grid.seed) for i in range(len(grid.values))]
        pairs = zip(dirs, grid.values, strict=True)
        configs = [arm_config(experiment, arm, grid.seed, d, {grid.field: v}) for d, v in pairs]
        if not all(is_finished(d, c.train.steps, done) for d, c in zip(dirs, configs, strict=True)):
            continue
        scores = [grid_score(d, experiment.choose) for d in dirs]
        pick = choose_value(scores)
        choices["arms"][arm.name] = {
            "field": grid.field,
            "value": grid.values[pick],
            "scores": {json.dumps(v): sc for v, sc in zip(grid.values, scores, strict=True)},
            "run": dirs[pick].name,
        }
        changed = True
    for name, choice in choices["arms"].items():
        link_chosen_run(runs_dir, name, grid.seed, choice["run"], keep_run=each_run)
    if changed:  # before planning: the plan reads choices.json, and an arm chosen just now adds its other seeds
        choices["rule"] = experiment.choose.describe(grid.field)
        choices["grid"] = {"field": grid.field, "values": list(grid.values), "seed": grid.seed}
        write_choices(experiment.out, choices)
    plan = planned_runs(experiment)
    all_chosen = len(choices["arms"]) == len(experiment.arms)
    if all_chosen and not choices.get("complete"):
        main = [(arm, seed, run_dir) for arm, seed, run_dir in experiment.runs()]
        if each_run:  # complete once every main run's checkpoints are chosen (each just before its test reading)
            if all(run_dir.name in choices["checkpoints"] for _, _, run_dir in main):
                choices["complete"] = True
                write_choices(experiment.out, choices)
            return choices
        finished = all(is_finished(r.run_dir, arm_config(experiment, r.arm, r.seed, r.run_dir, r.extra).train.steps,
                                   done) for r in plan)  # fmt: skip
        if finished:
            for arm, _, run_dir in main:
                choices["checkpoints"][run_dir.name] = checkpoint_choice(run_dir, arm.name)
            choices["complete"] = True
            write_choices(experiment.out, choices)
    return choices


def checkpoint_choice(run_dir: Path, arm: str) -> dict[str, Any]:
    """A finished run's checkpoints for the test (the rule of `choices`): its last validation step and its best dev
    step, with that step's dev best-of-N."""
    best, value = best_dev_step(run_dir)
    last = max(step for step, _ in validations(run_dir))
    return {"last": last, "best_dev": best, "best_dev_value": value, "arm": arm}


def main_runs(experiment: Experiment) -> list[PlannedRun]:
    """The runs the test reads (`experiment.runs()`) that can be trained now: without a grid all of them; with
    one, those of the arms whose value is chosen, at that value (at the grid seed: the chosen grid run's folder)."""
    grid = experiment.grid
    if grid is None:
        return [PlannedRun(arm, arm.name, seed, run_dir) for arm, seed, run_dir in experiment.runs()]
    chosen = read_choices(experiment.out)["arms"]
    return [
        PlannedRun(arm, arm.name, seed, run_dir, {grid.field: chosen[arm.name]["value"]})
        for arm, seed, run_dir in experiment.runs()
        if arm.name in chosen
    ]


def run_experiment(
    experiment: Experiment, *, progress: bool = True, test: bool = False, until: float | None = None
) -> dict[str, Any]:
    """Train every run that is not finished (resuming interrupted ones), making the choices the finished runs
    allow and rewriting the summary after each; then the final diagnostics; with `test`, the test phase. With
    `test: {when: each-run}` in the file, each main run is read on test as soon as it is finished (`_test_run`).
    `until` (a time.time() value): start or resume no training after it (a run's test reading still follows it)."""
    from frost.run.trainer import Trainer

    experiment.out.mkdir(parents=True, exist_ok=True)
    log = experiment.out / "progress.jsonl"
    each_run = experiment.test is not None and experiment.test.each_run
    if test and each_run:
        raise ConfigError(
            "--test: this file reads each run on test as it finishes (test.when: each-run); run it plainly"
        )

    def note(record: dict[str, Any]) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), **record}) + "\n")

    elsewhere: set[str] = set()
    late: set[str] = set()
    tried: set[Path] = set()
    while True:
        update_choices(experiment)
        mains = main_runs(experiment) if each_run else []
        main_dirs = {r.run_dir for r in mains}
        # an arm's run at the grid seed first (its grid run's test reading, while its adapters are here), then the
        # grid (an arm's grid runs side by side, so that its choice comes while both are on this machine), then the
        # other seeds
        first = [r for r in mains if experiment.grid is not None and r.seed == experiment.grid.seed]
        rest = [r for r in mains if r not in first]
        units = first + [r for r in planned_runs(experiment) if r.run_dir not in main_dirs] + rest
        todo = [r for r in units if r.run_dir not in tried]
        if not todo:
            break
        run = todo[0]
        tried.add(run.run_dir)
        arm, seed, run_dir = run.arm, run.seed, run.run_dir
        config = arm_config(experiment, arm, seed, run_dir, run.extra)
        steps = config.train.steps
        is_main = run.run_dir in main_dirs
        if is_main:
            if is_tested(experiment, run):
                continue
        elif is_finished(run_dir, steps, logged_done(experiment)):
            continue
        claim = claims.claim(experiment.out / "claims" / run_dir.name)
        if claim is None:  # another worker trains it
            elsewhere.add(f"{run.name} seed {seed}")
            continue
        try:
            if is_main and is_tested(experiment, run):  # again: a worker may have done it since the first look
                continue
            if not is_main and is_finished(run_dir, steps, logged_done(experiment)):
                continue
            done = finished_step(run_dir)
            if done is None or done < steps:  # to train: from its checkpoint here, else from the start
                if until is not None and time.time() > until:
                    late.add(f"{run.name} seed {seed}")
                    continue
                if is_main and done is None:
                    fresh_main_folder(experiment, run)
                    config = arm_config(experiment, arm, seed, run_dir, run.extra)
                note({"arm": run.name, "seed": seed, "event": "resume" if done else "start", "step": done or 0})
                trainer = Trainer(config, resume=done is not None, overwrite=done is None)

                def on_step(metrics: dict[str, Any], name: str = run.name, seed: int = seed) -> None:
                    note({"arm": name, "seed": seed, "event": "step", "step": metrics["step"],
                          "step_s": metrics["time/step_s"]})  # fmt: skip

                try:
                    trainer.run(progress=progress, on_metrics=on_step)
                finally:
                    trainer.close()
                if trainer.stop_signal is not None:  # stopped by a signal: the checkpoint is saved; pause
                    note({"arm": run.name, "seed": seed, "event": "paused", "step": trainer.step})
                    write_summary(experiment)
                    raise ExperimentPaused(f"{run.name} seed {seed} at step {trainer.step}")
                note({"arm": run.name, "seed": seed, "event": "done", "step": trainer.step})
            if is_main:
                write_summary(experiment)
                _test_run(experiment, run, note)
        finally:
            claim.close()
        write_summary(experiment)
    if experiment.final is not None:
        _run_final(experiment, experiment.final, note)
    if test:
        _run_test(experiment, note)
    if elsewhere:
        print(f"frost experiment: left to the workers training them: {', '.join(sorted(elsewhere))}", file=sys.stderr)
    if late:
        print(f"frost experiment: not started, past --until: {', '.join(sorted(late))}", file=sys.stderr)
    return write_summary(experiment)


def fresh_main_folder(experiment: Experiment, run: PlannedRun) -> None:
    """Before a main run trains from its start under `when: each-run`: its folder of its own (at the grid seed, in
    place of the link to the chosen grid run, whose adapters are gone: the grid run's logs stay the record of the
    choice), and any checkpoint choice made for an earlier training of it that was never read on test dropped from
    `choices.json` (kept under `replaced`)."""
    with claims.locked(experiment.out / "claims" / "choices.lock"):  # no worker links it again in between
        if run.run_dir.is_symlink():
            run.run_dir.unlink()
        run.run_dir.mkdir(parents=True, exist_ok=True)
        choices = read_choices(experiment.out)
        old = choices["checkpoints"].pop(run.run_dir.name, None)
        if old is not None:
            choices.setdefault("replaced", []).append(
                {"run": run.run_dir.name, "checkpoints": old, "time": time.time()}
            )
            choices["complete"] = False
            write_choices(experiment.out, choices)


def logged_done(experiment: Experiment) -> dict[str, int]:
    """The folder names of the runs whose last event in `progress.jsonl` is "done", with the step they finished at:
    finished, whether or not their checkpoints are still on this machine (a machine that keeps nothing between
    sessions keeps the logs in git)."""
    last: dict[str, dict[str, Any]] = {}
    for event in runlog.read(experiment.out / "progress.jsonl"):
        if event["event"] in RUN_EVENTS:
            last[f"{event['arm']}-seed{event['seed']}"] = event
    return {name: int(e.get("step", 0)) for name, e in last.items() if e["event"] == "done"}


def test_commands(experiment: Experiment, choices: dict[str, Any]) -> list[tuple[Path, list[str]]]:
    """The test phase's `frost evaluate` commands: every main run at each chosen checkpoint (a step once)."""
    assert experiment.test is not None
    commands = []
    for _, _, run_dir in experiment.runs():
        commands += run_test_commands(experiment, run_dir, choices["checkpoints"][run_dir.name],
                                      experiment.out / "choices.json")  # fmt: skip
    return commands


def run_test_commands(
    experiment: Experiment, run_dir: Path, chosen: dict[str, Any], record: Path
) -> list[tuple[Path, list[str]]]:
    """One run's `frost evaluate` commands on the test split, at each of its chosen checkpoints (a step once), each
    recording the SHA-256 of `record` (the choices it was read under)."""
    assert experiment.test is not None
    commands = []
    for step in sorted({int(chosen[kind]) for kind in CHECKPOINT_KINDS}):
        adapter = run_dir / "adapters" / f"step-{step:07d}"
        args = ["evaluate", str(adapter), "--split", "test", "--samples", str(experiment.test.samples),
                "--record", str(record)]  # fmt: skip
        commands.append((Path(run_dir.name) / f"step-{step:07d}", args))
    return commands


def is_tested(experiment: Experiment, run: PlannedRun) -> bool:
    """Whether a main run was read on test (`when: each-run`) under its current choice, at every chosen checkpoint."""
    choices = read_choices(experiment.out)
    name = run.run_dir.name
    if name not in choices["checkpoints"]:
        return False
    path = experiment.out / "test" / name / "choice.json"
    text = run_choice_text(run_choice(choices, run.arm.name, name))
    if not path.is_file() or path.read_text() != text:
        return False
    commands = run_test_commands(experiment, run.run_dir, choices["checkpoints"][name], path)
    return all(is_done(experiment.out / "test" / rel, args) for rel, args in commands)


def _test_run(experiment: Experiment, run: PlannedRun, note: Callable[[dict[str, Any]], None]) -> None:
    """`when: each-run`: a finished main run's checkpoints chosen by the file's rule from its own dev log and
    written to `choices.json`, then its own choice to `OUT/test/RUN/choice.json`, and only then its chosen
    checkpoints read on the test split (each recording that file's SHA-256). A stop signal pauses the experiment."""
    import torch

    name = run.run_dir.name
    with claims.locked(experiment.out / "claims" / "choices.lock"):
        choices = read_choices(experiment.out)
        chosen = checkpoint_choice(run.run_dir, run.arm.name)
        old = choices["checkpoints"].get(name)
        if old != chosen:
            if old is not None:
                choices.setdefault("replaced", []).append({"run": name, "checkpoints": old, "time": time.time()})
            choices["checkpoints"][name] = chosen
            write_choices(experiment.out, choices)
    path = experiment.out / "test" / name / "choice.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_choice_text(run_choice(choices, run.arm.name, name)))
    try:
        run_diagnostics(experiment.out, run_test_commands(experiment, run.run_dir, chosen, path), note,
                        torch.get_num_threads(), "test")  # fmt: skip
    except DiagnosticPaused as paused:
        write_summary(experiment)
        raise ExperimentPaused(str(paused)) from paused


def _run_test(experiment: Experiment, note: Callable[[dict[str, Any]], None]) -> None:
    """The test phase (`--test`): only with a complete choices.json, after every run and choice."""
    import torch

    if experiment.test is None:
        raise ConfigError("--test: the experiment file has no test block (test: {samples: 8})")
    choices = read_choices(experiment.out)
    if not choices.get("complete"):
        raise ConfigError(
            f"--test: {experiment.out / 'choices.json'} is not complete (every run finished, every choice written); "
            "run the experiment to its end first"
        )
    try:
        run_diagnostics(experiment.out, test_commands(experiment, choices), note, torch.get_num_threads(), "test")
    except DiagnosticPaused as paused:
        write_summary(experiment)
        raise ExperimentPaused(str(paused)) from paused


def is_finished(run_dir: Path, steps: int, done: Mapping[str, int] | None = None) -> bool:
    """Whether a run's latest checkpoint has reached `steps`, or `done` (`logged_done`) has it finished there."""
    if done is not None and done.get(run_dir.name, -1) >= steps:
        return True
    step = finished_step(run_dir)
    return step is not None and step >= steps


def _run_final(experiment: Experiment, final: FinalDiagnostics, note: Callable[[dict[str, Any]], None]) -> None:
    """The final diagnostics that the finished runs allow (`frost.analysis.experiment.final`); a stop signal pauses."""
    import torch

    finished = {}
    for arm, seed, run_dir in experiment.runs():
        config = arm_config(experiment, arm, seed, run_dir)
        if is_finished(run_dir, config.train.steps):
            finished[(arm.name, seed)] = (run_dir, config)
    commands = diagnostic_commands(final, experiment.reference, finished)
    try:
        run_diagnostics(experiment.out, commands, note, torch.get_num_threads())
    except DiagnosticPaused as paused:
        write_summary(experiment)
        raise ExperimentPaused(str(paused)) from paused


def _records(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [r for r in rows if "reward" in r], [r for r in rows if "val/reward_mean" in r]


def best_by_text(run_dir: Path, step: int) -> dict[str, float]:
    """Best reward of each validation text's samples at a validation step (`samples.jsonl`)."""
    out: dict[str, float] = {}
    for row in runlog.read(run_dir / "samples.jsonl"):
        if row["step"] == step:
            out[row["doc"]] = max(m["reward"] for m in row["moves"])
    return out


def _judge_fwd_at(run_dir: Path) -> dict[int, int]:
    """Judge forward sequences spent up to each validation step of a run."""
    train, val = _records(run_dir)
    return {int(v["step"]): sum(r["judge_fwd_seqs"] for r in train if r["step"] <= v["step"]) for v in val}


def unfinished_runs(experiment: Experiment) -> dict[tuple[str, int], int]:
    """Runs started but not finished, from `progress.jsonl`: (arm, seed) -> the last step logged. A run counts as
    finished when its last event is "done" (a run extended to more steps after it finished is unfinished again)."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    step: dict[tuple[str, int], int] = {}
    for event in runlog.read(experiment.out / "progress.jsonl"):
        if event["event"] not in RUN_EVENTS:
            continue
        key = (str(event["arm"]), int(event["seed"]))
        last[key] = event
        step[key] = int(event.get("step", 0))
    return {key: step[key] for key, event in last.items() if event["event"] != "done"}


def paired(
    experiment: Experiment,
    arm: Arm,
    matched: str = "step",
    skip: Collection[tuple[str, int]] = (),
    anchor: int | None = None,
) -> dict[str, Any] | None:
    """Best-of-N of `arm` minus the reference's, per validation text and seed: at their last common validation step
    (`matched="step"`), or (`matched="judge_fwd"`, the paper's x axis) the reference at its last validation step (or
    at validation step `anchor`) and the arm at its last validation step that spent no more judge forward sequences
    than the reference had. Seeds where either run is in `skip` ((arm, seed) pairs, e.g. unfinished runs) are left
    out."""
    if experiment.reference is None or arm.name == experiment.reference:
        return None
    ref = next(a for a in experiment.arms if a.name == experiment.reference)
    diffs: list[float] = []
    per_seed: list[dict[str, Any]] = []
    steps, ref_steps, fwd, ref_fwd = [], [], [], []
    for seed in sorted(set(arm.seeds or experiment.seeds) & set(ref.seeds or experiment.seeds)):
        if (arm.name, seed) in skip or (ref.name, seed) in skip:
            continue
        a_dir = experiment.out / "runs" / f"{arm.name}-seed{seed}"
        r_dir = experiment.out / "runs" / f"{ref.name}-seed{seed}"
        a_fwd, r_fwd = _judge_fwd_at(a_dir), _judge_fwd_at(r_dir)
        if matched == "judge_fwd":
            if not r_fwd or not a_fwd or (anchor is not None and anchor not in r_fwd):
                continue
            r_step = max(r_fwd) if anchor is None else anchor
            within = [s for s, n in a_fwd.items() if n <= r_fwd[r_step]]
            if not within:
                continue
            step = max(within)
        else:
            common = a_fwd.keys() & r_fwd.keys()
            if not common:
                continue
            step = r_step = max(common)
        steps.append(step)
        ref_steps.append(r_step)
        fwd.append(a_fwd[step])
        ref_fwd.append(r_fwd[r_step])
        mine, theirs = best_by_text(a_dir, step), best_by_text(r_dir, r_step)
        seed_diffs = [mine[d] - theirs[d] for d in sorted(mine.keys() & theirs.keys())]
        if seed_diffs:
            per_seed.append({"seed": seed, "mean": statistics.fmean(seed_diffs), "n": len(seed_diffs)})
        diffs += seed_diffs
    if not diffs:
        return None
    return {
        "against": ref.name,
        "matched": matched,
        "steps": steps,
        "reference_steps": ref_steps,
        "judge_fwd": fwd,
        "reference_judge_fwd": ref_fwd,
        **paired_summary(diffs, per_seed),
    }


def matched_curve(experiment: Experiment, arm: Arm, skip: Collection[tuple[str, int]] = ()) -> list[dict[str, Any]]:
    """The matched-judge-forwards comparison at every validation step of the reference (not one anchor): for each,
    `paired(..., matched="judge_fwd", anchor=step)`, with the reference's mean judge forwards at that step."""
    if experiment.reference is None or arm.name == experiment.reference:
        return []
    ref = next(a for a in experiment.arms if a.name == experiment.reference)
    steps: set[int] = set()
    for seed in ref.seeds or experiment.seeds:
        if (ref.name, seed) not in skip:
            steps |= set(_judge_fwd_at(experiment.out / "runs" / f"{ref.name}-seed{seed}"))
    curve = []
    for step in sorted(steps):
        p = paired(experiment, arm, matched="judge_fwd", skip=skip, anchor=step)
        if p is not None:
            curve.append({"reference_step": step, "reference_judge_fwd": statistics.fmean(p["reference_judge_fwd"]),
                          "arm_steps": p["steps"], "over_seeds": p["over_seeds"], "mean": p["mean"],
                          "seeds": len(p["per_seed"])})  # fmt: skip
    return curve


CURVES = ("best", "mean", "entropy", "var", "zero", "copy", "judge_fwd", "wall_s")
"""Per validation step and seed: best-of-N, mean reward, token entropy, score variance, zero-variance groups, copies
of the beginning (the game's copy metric), and the judge forwards and training wall seconds spent up to that step."""


def summarize(experiment: Experiment) -> dict[str, Any]:
    """The experiment's statistics from its finished runs (unfinished ones are listed, not counted; so are the runs
    the file asks for that have not started)."""
    unfinished = unfinished_runs(experiment)
    arms: dict[str, Any] = {}
    not_started: list[dict[str, Any]] = []
    for arm in experiment.arms:
        seeds = arm.seeds or experiment.seeds
        curves: dict[int, dict[str, list[float]]] = {}
        runs = []
        for seed in seeds:
            if (arm.name, seed) in unfinished:
                continue
            run_dir = experiment.out / "runs" / f"{arm.name}-seed{seed}"
            train, val = _records(run_dir)
            if not train and not val:
                not_started.append({"arm": arm.name, "seed": seed})
                continue
            best_key = next((k for k in (val[0] if val else {}) if k.startswith("val/best_of_")), None)
            copy_key = next((k for k in (val[0] if val else {}) if k.startswith("val/frac_") and "zero" not in k), None)
            for v in val:
                step = int(v["step"])
                c = curves.setdefault(step, {k: [] for k in CURVES})
                c["best"].append(v[best_key] if best_key else float("nan"))
                c["mean"].append(v["val/reward_mean"])
                c["entropy"].append(v["val/token_entropy"])
                c["var"].append(v["val/score_var"])
                c["zero"].append(v["val/frac_zero_var"])
                c["copy"].append(v[copy_key] if copy_key else float("nan"))
                c["judge_fwd"].append(sum(r["judge_fwd_seqs"] for r in train if r["step"] <= step))
                c["wall_s"].append(sum(r["time/step_s"] for r in train if r["step"] <= step))
            runs.append(
                {
                    "seed": seed,
                    "steps": train[-1]["step"] if train else 0,
                    "judge_fwd_seqs": sum(r["judge_fwd_seqs"] for r in train),
                    "wall_s": sum(r["time/step_s"] for r in train),
                    "skipped_steps": train[-1].get("train/skipped_steps", 0) if train else 0,
                }
            )
        arms[arm.name] = {
            "runs": runs,
            "curves": {s: {k: mean_ci(v) for k, v in c.items()} for s, c in sorted(curves.items())},
            "paired": paired(experiment, arm, skip=unfinished),
            "paired_at_judge_fwd": paired(experiment, arm, matched="judge_fwd", skip=unfinished),
            "matched_curve": matched_curve(experiment, arm, unfinished),
        }
    in_progress = [{"arm": a, "seed": s, "step": n} for (a, s), n in sorted(unfinished.items())]
    summary: dict[str, Any] = {
        "reference": experiment.reference,
        "arms": arms,
        "in_progress": in_progress,
        "not_started": not_started,
    }
    choices = read_choices(experiment.out)
    if experiment.grid is not None:
        summary["choices"] = choices
    if experiment.test is not None:
        arm_seeds = {a.name: a.seeds or experiment.seeds for a in experiment.arms}
        names = [a.name for a in experiment.arms]
        if experiment.test.each_run and not choices.get("complete"):  # sealed until every choice is made
            summary["test"] = {"sealed": True, "read": sorted(choices.get("checkpoints", {}))}
        else:
            summary["test"] = test_summary(experiment.out, choices, names, experiment.baselines, arm_seeds,
                                           each_run=experiment.test.each_run)  # fmt: skip
    if experiment.final is not None:
        names = [a.name for a in experiment.arms]
        summary["final"] = summarize_final(experiment.final, experiment.out, experiment.reference, names)
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """Final validation per arm (mean +- 95% CI over seeds; the peak: the validation step with the best mean
    best-of-N over seeds), paired differences, cost."""
    lines = [
        "| arm | seeds | steps | val best-of-N (last step) | peak best-of-N (step) | val mean reward | token entropy "
        "| zero-variance groups | judge fwd seqs per run | wall s per run |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for name, arm in summary["arms"].items():
        if not arm["curves"]:
            continue
        last = max(arm["curves"])
        c = arm["curves"][last]
        runs = arm["runs"]
        peak = max(arm["curves"], key=lambda s: arm["curves"][s]["best"]["mean"])
        lines.append(
            f"| {name} | {c['best']['n']} | {last} | {pm(c['best']['mean'], c['best']['ci95'])} "
            f"| {arm['curves'][peak]['best']['mean']:.2f} ({peak}) "
            f"| {pm(c['mean']['mean'], c['mean']['ci95'])} | {c['entropy']['mean']:.3f} "
            f"| {c['zero']['mean']:.2f} | {statistics.fmean(r['judge_fwd_seqs'] for r in runs):.0f} "
            f"| {statistics.fmean(r['wall_s'] for r in runs):.0f} |"
        )
    if summary.get("in_progress"):
        runs = ", ".join(f"{r['arm']} seed {r['seed']} (step {r['step']})" for r in summary["in_progress"])
        lines += ["", f"Unfinished runs, not counted above or below: {runs}."]
    if summary.get("not_started"):
        runs = ", ".join(f"{r['arm']} seed {r['seed']}" for r in summary["not_started"])
        lines += ["", f"Runs not started yet: {runs}."]
    pairs = [(n, a["paired"]) for n, a in summary["arms"].items() if a["paired"]]
    if pairs:
        lines += [
            "",
            "Paired best-of-N per validation text (arm minus reference, same text, seed and step):",
            "",
        ]
        lines += _paired_table(pairs)
    matched = [(n, a.get("paired_at_judge_fwd")) for n, a in summary["arms"].items() if a.get("paired_at_judge_fwd")]
    if matched:
        lines += [
            "",
            "The same at matched judge forwards (the reference at its last validation step; the arm at its last "
            "validation step that had run no more judge forward sequences; sequences actually run, a move repeated "
            "within its group scored once):",
            "",
        ]
        lines += _paired_table(matched)
    curves = [(n, a["matched_curve"]) for n, a in summary["arms"].items() if a.get("matched_curve")]
    if curves:
        columns = sorted({c["reference_step"]: c for _, curve in curves for c in curve}.items())
        header = " | ".join(f"ref step {step} ({c['reference_judge_fwd']:.0f} fwd)" for step, c in columns)
        lines += [
            "",
            "Matched judge forwards at every validation step of the reference (arm minus reference, per validation "
            "text and seed; the arm at its last validation step with no more judge forwards; mean over seeds +- 95% t "
            "interval):",
            "",
            f"| arm | {header} |",
            "|---|" + "---|" * len(columns),
        ]
        for name, curve in curves:
            cells = {c["reference_step"]: pm(c["over_seeds"]["mean"], c["over_seeds"]["ci95"], "+.2f") for c in curve}
            lines.append(f"| {name} | " + " | ".join(cells.get(step, "-") for step, _ in columns) + " |")
    if summary.get("final"):
        lines += final_markdown(summary["final"])
    if summary.get("choices", {}).get("arms"):
        lines += choices_markdown(summary["choices"])
    if summary.get("test", {}).get("sealed"):
        read = summary["test"]["read"]
        runs = f"{len(read)} run{'' if len(read) == 1 else 's'}"
        lines += ["", f"Test: sealed until every choice is made ({runs} read on test as they finished; "
                  "no test result is shown before then)."]  # fmt: skip
    elif summary.get("test", {}).get("pairs") or any(
        k["seeds"] for a in summary.get("test", {}).get("arms", {}).values() for k in a.values()
    ):
        lines += test_markdown(summary["test"])
    return "\n".join(lines)


def choices_markdown(choices: dict[str, Any]) -> list[str]:
    """The choices made on the dev texts."""
    lines = ["", f"Choices on the dev texts ({choices.get('rule', '')}):", "",
             "| arm | chosen | score of each value |", "|---|---|---|"]  # fmt: skip
    for arm, c in choices["arms"].items():
        scores = ", ".join(f"{v}: {sc:.2f}" for v, sc in c["scores"].items())
        lines.append(f"| {arm} | {c['field']} = {c['value']} | {scores} |")
    if choices.get("checkpoints"):
        lines += ["", "| run | last step | best dev step (dev best-of-N) |", "|---|---:|---|"]
        for run, c in sorted(choices["checkpoints"].items()):
            lines.append(f"| {run} | {c['last']} | {c['best_dev']} ({c['best_dev_value']:.2f}) |")
    return lines


def test_markdown(test: dict[str, Any]) -> list[str]:
    """The test phase's tables: the headline (each arm against the best baseline at its best dev checkpoint), per
    arm and checkpoint, and every pair; nothing before the test phase has run."""
    if not any(t["seeds"] for kinds in test["arms"].values() for t in kinds.values()):
        return []
    lines = [
        "",
        (
            "Test split (each main run read once, as it finished, under its own choices, recorded in "
            "test/RUN/choice.json; shown now that choices.json is complete): best-of-N"
            if test.get("each_run")
            else "Test split (read once, after every choice; results evaluated under choices.json "
            f"`{str(test.get('choices_sha256'))[:12]}`): best-of-N"
        )
        + " per arm and checkpoint, mean over seeds +- 95% t "
        "interval, and the near-copy rate of the best moves (at least 70% of the move's words a run of the shown "
        "text: the copy metric's, infilling's beginning; beside it, of any part of the document the player was "
        "shown):",
        "",
        "| arm | checkpoint | seeds | test best-of-N | near-copy best moves | near-copy of any shown part |",
        "|---|---|---:|---|---|---|",
    ]
    for arm, kinds in test["arms"].items():
        for kind, t in kinds.items():
            b, c = t["best_of_n"], t["near_copy"]
            a = t.get("near_copy_any_part", {"n": 0})
            seeds = f"{t['seeds']} of {t.get('seeds_expected', t['seeds'])}"
            part = pm(a["mean"], a["ci95"]) if a["n"] else "-"
            cells = f"{pm(b['mean'], b['ci95'])} | {pm(c['mean'], c['ci95'])} | {part}" if t["seeds"] else "- | - | -"
            lines.append(f"| {arm} | {kind} | {seeds} | {cells} |")
    best = test.get("best_baseline")
    headline = [p for p in test["pairs"] if p["against"] == best and p["checkpoint"] == "best_dev"]
    if headline:
        lines += [
            "",
            f"Headline: each arm minus the best baseline ({best}: the highest mean dev best-of-N at its best dev "
            "steps, fixed before the test), at each run's best dev checkpoint; the verdict: a win when the mean over "
            "seeds is above 0 and its 95% t interval excludes 0, a loss when below and excluding 0:",
            "",
            "| arm | per seed | over seeds +- 95% CI | verdict | no near-copy: over seeds +- 95% CI (pairs) |",
            "|---|---|---|---|---|",
        ]
        for p in headline:
            per_seed = ", ".join(f"seed {q['seed']}: {q['mean']:+.2f}" for q in p["per_seed"])
            over, clean = p["over_seeds"], p["no_copy"]
            lines.append(
                f"| {p['arm']} | {per_seed} | {pm(over['mean'], over['ci95'], '+.2f')} | {p['verdict']} "
                f"| {pm(clean['over_seeds']['mean'], clean['over_seeds']['ci95'], '+.2f')} ({clean['n']}) |"
            )
    if test["pairs"]:
        lines += [
            "",
            "Paired on test (arm minus baseline, same test text and seed): all texts, and the texts where neither best "
            "move is a near-copy of the shown text; wins whose best move is a near-copy of the baseline's best move:",
            "",
            "| arm | against | checkpoint | pairs | mean +- SE | wins / losses / ties | per seed (won) | over seeds "
            "+- 95% CI | verdict | no near-copy: pairs, over seeds +- 95% CI, wins | wins that vary the baseline's "
            "move |",
            "|---|---|---|---:|---|---|---|---|---|---|---:|",
        ]
        for p in test["pairs"]:
            per_seed = ", ".join(f"{q['mean']:+.2f}" for q in p["per_seed"])
            over, clean = p["over_seeds"], p["no_copy"]
            expected = p.get("seeds_expected", len(p["per_seed"]))
            lines.append(
                f"| {p['arm']} | {p['against']} | {p['checkpoint']} | {p['n']} | {pm(p['mean'], p['se'], '+.2f')} "
                f"| {p['wins']} / {p['losses']} / {p['ties']} | {per_seed} ({p['seeds_won']} won; "
                f"{len(p['per_seed'])} of {expected} seeds) | {pm(over['mean'], over['ci95'], '+.2f')} "
                f"| {p.get('verdict', '')} | {clean['n']}, "
                f"{pm(clean['over_seeds']['mean'], clean['over_seeds']['ci95'], '+.2f')}, {clean['wins']} "
                f"| {p['wins_near_copy_of_baseline']} |"
            )
    if test.get("missing"):
        lines += ["", "Not evaluated under this choices.json, not counted above: " + ", ".join(test["missing"]) + "."]
    return lines


def _paired_table(pairs: list[tuple[str, Any]]) -> list[str]:
    lines = [
        "| arm | against | arm steps (judge fwd) | reference steps (judge fwd) | pairs | mean difference +- SE "
        "| wins / losses / ties | mean per seed (seeds won) | over seeds: mean +- 95% CI |",
        "|---|---|---|---|---:|---|---|---|---|",
    ]
    for name, p in pairs:
        per_seed = ", ".join(f"{q['mean']:+.2f}" for q in p["per_seed"])
        over = p["over_seeds"]
        mine = ", ".join(f"{s} ({n})" for s, n in zip(p["steps"], p.get("judge_fwd", []), strict=False))
        theirs = ", ".join(f"{s} ({n})" for s, n in zip(p.get("reference_steps", []), p.get("reference_judge_fwd", []),
                                                       strict=False))  # fmt: skip
        lines.append(
            f"| {name} | {p['against']} | {mine} | {theirs} | {p['n']} | {pm(p['mean'], p['se'], '+.2f')} "
            f"| {p['wins']} / {p['losses']} / {p['ties']} | {per_seed} ({p['seeds_won']} of {len(p['per_seed'])}) "
            f"| {pm(over['mean'], over['ci95'], '+.2f')} |"
        )
    return lines


def write_summary(experiment: Experiment) -> dict[str, Any]:
    """Rewrite `summary.json` and `summary.md` from the run folders."""
    summary = summarize(experiment)
    out = experiment.out
    out.mkdir(parents=True, exist_ok=True)
    tag = f"tmp-{os.getpid()}"  # several workers may write at once: each writes its own file, then renames it in
    (out / f"summary.{tag}.json").write_text(json.dumps(summary, indent=1))
    os.replace(out / f"summary.{tag}.json", out / "summary.json")
    (out / f"summary.{tag}.md").write_text(markdown(summary) + "\n")
    os.replace(out / f"summary.{tag}.md", out / "summary.md")
    if any(arm["curves"] for arm in summary["arms"].values()):
        from frost.analysis.experiment.plots import plot_curves

        plot_curves(summary, out / f"curves.{tag}.png")
        os.replace(out / f"curves.{tag}.png", out / "curves.png")
    return summary
