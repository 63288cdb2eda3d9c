"""The diagnostics of an experiment's final checkpoints, per seed, and their summary over seeds.

An experiment file asks for them with a `final` block (either part may be left out):

    final:
      samples: {prompts: 30}                                               # Appendix D: each arm against the reference
      selection: {prompts: 16, K: 4, D: 4, rules: [taylor-gated, judge-gated]}   # §3.3 at every trained player

Once a seed's runs are finished, `frost experiment` runs each diagnostic as its own `frost diagnose` process (the one
implementation, as a user would call it; its output in `log.txt` beside its results):

- `frost diagnose samples REF-seedS ARM-seedS` for every other arm into `OUT/final/samples/ARM-seedS/` (the game and
  validation prompts of the runs, the same sampling seed for both players);
- `frost diagnose selection --checkpoint ARM-seedS` for every run into `OUT/final/selection/ARM-seedS/`, and once
  for the untrained model into `OUT/final/selection/base/` (the run's model, game, move length and documents).

A diagnostic is done when its folder holds `done.json` with the command it ran; one that was stopped runs again
(a selection resumes from the prompts it had written), and one whose command changed (other settings in `final`)
runs afresh. Workers share them out with claims (`OUT/claims/final-KIND-NAME`) as they share runs. The summary gives,
per arm, the means over seeds with a 95% t interval of Table 1 (both players), the counts of Table 2 summed over
seeds, and the lift of each selection rule.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from frost.analysis.stats import mean_ci, pm
from frost.errors import ConfigError, FrostError
from frost.run import claims

SAMPLES_FIELDS: dict[str, type] = {"prompts": int, "samples": int, "seed": int}
"""`final.samples`: options of `frost diagnose samples`."""
SELECTION_FIELDS: dict[str, type] = {
    "prompts": int, "K": int, "D": int, "tau": float, "rules": list, "rank_by": str, "seed": int,
}  # fmt: skip
"""`final.selection`: options of `frost diagnose selection` (one K, D and tau: one column per rule)."""
TABLE1 = ("best_of_k", "mean_reward", "variance", "entropy", "prefix_ce", "text_ce")
TABLE2 = ("a_best_beats_b_best", "a_zero_variance", "b_zero_variance", "a_best_copies_beginning",
          "b_best_copies_beginning")  # fmt: skip


@dataclass
class FinalDiagnostics:
    """What to run at the final checkpoints: the options of each diagnostic (None: not run)."""

    samples: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None


class DiagnosticPaused(Exception):
    """A stop signal ended a diagnostic; the same command runs it again."""


def _options(value: Any, fields: dict[str, type], where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: give a mapping of options, e.g. {{prompts: 16}}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = fields.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown field {key!r}; known: {', '.join(fields)}")
        if kind is list:
            item = item.split(",") if isinstance(item, str) else item
            if not isinstance(item, list) or not item or not all(isinstance(r, str) and r.strip() for r in item):
                raise ConfigError(f"{where}.{key}: give a list of names, e.g. [taylor-gated, judge-gated]")
            from frost.rules import RULES

            item = [r.strip() for r in item]
            unknown = [r for r in item if r not in RULES]
            if unknown:
                raise ConfigError(f"{where}.{key}: unknown rule {unknown[0]!r}; known: {', '.join(RULES)}")
        elif kind is float:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item < 1:
                raise ConfigError(f"{where}.{key}: give a probability in (0, 1), e.g. 1.0e-4")
            item = float(item)
        elif kind is int:
            low = 0 if key in ("seed", "D") else 1
            if isinstance(item, bool) or not isinstance(item, int) or item < low:
                raise ConfigError(f"{where}.{key}: give an integer >= {low}")
        elif not isinstance(item, str):
            raise ConfigError(f"{where}.{key}: give a name")
        out[key] = item
    if "rank_by" in out:
        from frost.rules import check_rank_by

        try:
            check_rank_by(out["rank_by"])
        except ConfigError as exc:
            raise ConfigError(f"{where}.rank_by: {exc}") from exc
    return out


def parse_final(value: Any, where: str = "experiment.final") -> FinalDiagnostics | None:
    """Check an experiment file's `final` block (one-line errors naming the field)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - {"samples", "selection"}:
        raise ConfigError(f"{where}: give a mapping with samples and/or selection, e.g. {{samples: {{prompts: 30}}}}")
    return FinalDiagnostics(
        samples=_options(value["samples"], SAMPLES_FIELDS, f"{where}.samples") if "samples" in value else None,
        selection=_options(value["selection"], SELECTION_FIELDS, f"{where}.selection")
        if "selection" in value
        else None,
    )


def _flags(options: dict[str, Any]) -> list[str]:
    flags = []
    for key, item in options.items():
        flags += [f"--{key.replace('_', '-')}", ",".join(item) if isinstance(item, list) else str(item)]
    return flags


def _model_flags(config: Any) -> list[str]:
    model = config.model
    flags = ["--model", str(model.name), "--device", model.device, "--dtype", model.dtype]
    return flags + (["--random-weights"] if model.random_weights else [])


def _selection_game_flags(config: Any, run_dir: Path) -> list[str]:
    from frost.games import is_game_file

    kind = str(config.game.kind)
    if is_game_file(kind) and (run_dir / "game.yaml").is_file():
        kind = str(run_dir / "game.yaml")  # the copy the run keeps of its game file
    flags = ["--game", kind, "--data", str(config.data.source), "--field", config.data.field]
    move_length = getattr(config.game, "move_length", None)
    return flags + (["--L", str(move_length)] if move_length else [])


def diagnostic_commands(
    spec: FinalDiagnostics, reference: str | None, finished: dict[tuple[str, int], tuple[Path, Any]]
) -> list[tuple[Path, list[str]]]:
    """The diagnostics the finished runs allow, as (output folder relative to OUT/final, `frost` arguments).
    `finished`: (arm, seed) -> (run folder, config) of every finished run."""
    commands: list[tuple[Path, list[str]]] = []
    if spec.samples is not None and reference is not None:
        for (arm, seed), (run_dir, _) in sorted(finished.items()):
            ref = finished.get((reference, seed))
            if arm == reference or ref is None:
                continue
            args = ["diagnose", "samples", str(ref[0]), str(run_dir), *_flags(spec.samples)]
            commands.append((Path("samples") / run_dir.name, args + _model_flags(ref[1])))
    if spec.selection is not None and finished:
        options = _flags(spec.selection)
        for run_dir, config in sorted(finished.values(), key=lambda rc: rc[0].name):
            args = ["diagnose", "selection", "--checkpoint", str(run_dir), *options]
            args += _selection_game_flags(config, run_dir) + _model_flags(config)
            commands.append((Path("selection") / run_dir.name, args))
        base_dir, base_config = finished[min(finished, key=lambda k: (k[0] != reference, k[1], k[0]))]
        args = ["diagnose", "selection", *options, *_selection_game_flags(base_config, base_dir)]
        commands.append((Path("selection") / "base", args + _model_flags(base_config)))
    return commands


def is_done(folder: Path, args: list[str]) -> bool:
    """Whether `folder` holds the results of exactly this command."""
    try:
        return bool(json.loads((folder / "done.json").read_text())["args"] == args)
    except (OSError, ValueError, KeyError):
        return False


def run_diagnostics(
    out: Path,
    commands: list[tuple[Path, list[str]]],
    note: Callable[[dict[str, Any]], None],
    threads: int = 0,
    root: str = "final",
) -> None:
    """Run every command not yet done (each claimed, so that workers share them out), as `python -m frost ARGS
    --threads THREADS --out OUT/ROOT/REL` with its output in `log.txt` there (the thread count is not part of what
    makes it done). A stop signal ends the diagnostic in progress and raises DiagnosticPaused."""
    for rel, args in commands:
        folder = out / root / rel
        if is_done(folder, args):
            continue
        held = claims.claim(out / "claims" / f"{root}-{rel.parent.name}-{rel.name}")
        if held is None:
            continue
        try:
            if is_done(folder, args):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            started = folder / "started.json"
            resume = args[1] == "selection" and started.is_file() and json.loads(started.read_text()) == args
            started.write_text(json.dumps(args))
            (folder / "done.json").unlink(missing_ok=True)  # results of other settings are replaced, not counted
            run = [*args, "--threads", str(threads), "--out", str(folder)] + (["--resume"] if resume else [])
            start = {"event": "diagnostic", "diagnostic": f"{rel.parent.name}/{rel.name}", "status": "start"}
            code = _run(run, folder / "log.txt", functools.partial(note, start))
            if code != 0:
                lines = (folder / "log.txt").read_text().strip().splitlines()
                last = lines[-1] if lines else "no output"
                raise FrostError(
                    f"{root}.{rel.parent.name} {rel.name} failed (exit {code}): {last}; see {folder}/log.txt"
                )
            (folder / "done.json").write_text(json.dumps({"args": args}) + "\n")
            note({"event": "diagnostic", "diagnostic": f"{rel.parent.name}/{rel.name}", "status": "done"})
        finally:
            held.close()


def _run(args: list[str], log: Path, started: Callable[[], None]) -> int:
    """`python -m frost ARGS` with its output appended to `log`, calling `started` first; SIGTERM/SIGINT stop it and
    raise DiagnosticPaused. The handlers are in place before `started` and the child's start, so a signal that
    follows the start being logged (or comes at any time until the child ends) pauses, never kills this process."""
    stopped: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        for proc in child:
            proc.send_signal(signal.SIGTERM)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        started()
        code = 0
        if not stopped:
            with log.open("a") as f:
                proc = subprocess.Popen([sys.executable, "-m", "frost", *args], stdout=f, stderr=subprocess.STDOUT,
                                        env=env)  # fmt: skip
                child.append(proc)
                if stopped:  # the signal came while the child was starting
                    proc.send_signal(signal.SIGTERM)
                code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped:
        raise DiagnosticPaused(f"{' '.join(args[:2])} stopped by signal {stopped[0]}")
    return code


def summarize_final(spec: FinalDiagnostics, out: Path, reference: str | None, arms: list[str]) -> dict[str, Any]:
    """Per arm, over the seeds whose diagnostics are done (of the kinds `spec` asks for): Table 1 of both players
    (mean +- 95% t interval over seeds), Table 2 summed over seeds, and each selection rule's lift (the untrained
    model under "base")."""
    samples: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    for arm in arms if spec.samples is not None else []:
        seeds = _done_seeds(out / "final" / "samples", arm)
        if seeds:
            results = [json.loads((folder / "samples.json").read_text()) for _, folder in seeds]
            ref_t1 = [next(iter(r["table1"].values())) for r in results]
            arm_t1 = [list(r["table1"].values())[1] for r in results]
            samples[arm] = {
                "against": reference,
                "seeds": [s for s, _ in seeds],
                "reference": {k: mean_ci([t[k] for t in ref_t1]) for k in TABLE1},
                "arm": {k: mean_ci([t[k] for t in arm_t1]) for k in TABLE1},
                "table2": {k: sum(r["table2"][k] for r in results) for k in ("prompts", *TABLE2)},
            }
    for arm in [*arms, "base"] if spec.selection is not None else []:
        seeds = _done_seeds(out / "final" / "selection", arm)
        if seeds:
            entries = [json.loads((folder / "summary.json").read_text()) for _, folder in seeds]
            rules = [e["rule"] for e in entries[0]]
            selection[arm] = {
                "seeds": [s for s, _ in seeds],
                "prompts": entries[0][0]["prompts"],
                "lift": {r: mean_ci([next(e["lift"] for e in es if e["rule"] == r) for es in entries]) for r in rules},
                "hit_rate": {
                    r: mean_ci([next(e["hit_rate"] for e in es if e["rule"] == r) for es in entries]) for r in rules
                },
            }
    return {"samples": samples, "selection": selection}


def _done_seeds(folder: Path, arm: str) -> list[tuple[int | None, Path]]:
    """(seed, folder) of the finished diagnostics of `arm` under `folder` (`ARM-seedS`, or `base`)."""
    if arm == "base":
        return [(None, folder / "base")] if (folder / "base" / "done.json").is_file() else []
    found = []
    for path in folder.glob(f"{arm}-seed*"):
        seed = path.name[len(arm) + len("-seed") :]
        if seed.isdigit() and (path / "done.json").is_file():
            found.append((int(seed), path))
    return sorted(found, key=lambda sf: sf[0] or 0)


def final_markdown(final: dict[str, Any]) -> list[str]:
    """The summary's tables of the final diagnostics (empty when none is done)."""
    lines: list[str] = []
    if final.get("samples"):
        lines += [
            "",
            "Appendix D at the final checkpoints (`frost diagnose samples REFERENCE ARM`, per seed; Table 1 as the "
            "reference / the arm, mean over seeds +- 95% CI; Table 2 counts summed over seeds):",
            "",
            "| arm | against | seeds | best-of-N | mean reward | token entropy | reference's best beats the arm's "
            "| zero-variance groups | best move copies the beginning |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, s in final["samples"].items():
            ref, mine, t2 = s["reference"], s["arm"], s["table2"]
            n = t2["prompts"]
            lines.append(
                f"| {arm} | {s['against']} | {len(s['seeds'])} "
                f"| {pm(ref['best_of_k']['mean'], ref['best_of_k']['ci95'])} / "
                f"{pm(mine['best_of_k']['mean'], mine['best_of_k']['ci95'])} "
                f"| {pm(ref['mean_reward']['mean'], ref['mean_reward']['ci95'])} / "
                f"{pm(mine['mean_reward']['mean'], mine['mean_reward']['ci95'])} "
                f"| {ref['entropy']['mean']:.3f} / {mine['entropy']['mean']:.3f} "
                f"| {t2['a_best_beats_b_best']}/{n} | {t2['a_zero_variance']}/{n} / {t2['b_zero_variance']}/{n} "
                f"| {t2['a_best_copies_beginning']}/{n} / {t2['b_best_copies_beginning']}/{n} |"
            )
    if final.get("selection"):
        rules = list(next(iter(final["selection"].values()))["lift"])
        lines += [
            "",
            "What is left for Frost to find at the final checkpoints (`frost diagnose selection --checkpoint RUN`; "
            "base: the untrained model): lift of best-of-K after one replacement round, nats, mean over seeds +- "
            "95% CI (hit rate: prompts where a child replaced a parent):",
            "",
            "| player | seeds | prompts | " + " | ".join(f"{r} lift (hit rate)" for r in rules) + " |",
            "|---|---:|---:|" + "---|" * len(rules),
        ]
        for arm, s in final["selection"].items():
            cells = [
                f"{pm(s['lift'][r]['mean'], s['lift'][r]['ci95'], '+.2f')} ({s['hit_rate'][r]['mean']:.2f})"
                if r in s["lift"]
                else "-"
                for r in rules
            ]
            seeds = "-" if arm == "base" else str(len(s["seeds"]))
            lines.append(f"| {arm} | {seeds} | {s['prompts']} | " + " | ".join(cells) + " |")
    return lines
