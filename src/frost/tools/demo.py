"""`frost demo` / `make demo`: Frost-GRPO against GRPO at matched judge forwards, on the embedded model, on CPU.

Three arms from `configs/`: GRPO K=8, Frost K=4 with the paper's `taylor-gated` rule, and Frost K=4 with our
`judge-gated` rule (the best of the evidence experiment); each does 8 judge forward sequences per text and step.
For every seed each arm trains from the same base model; the demo then prints a comparison of validation metrics
and writes a Markdown table, a JSON summary and a `frost report` of the runs (figures and an HTML page).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frost.run import metrics as run_metrics

ARMS = (
    ("grpo-k8", "cpu-demo-grpo.yaml", "GRPO K=8"),
    ("frost-k4-taylor-gated", "cpu-demo-frost.yaml", "Frost K=4, taylor-gated (paper)"),
    ("frost-k4-judge-gated", "cpu-demo-frost-judge.yaml", "Frost K=4, judge-gated (ours)"),
)
DEMO_SCORE_ARGS = (
    "score", "--begin", "Once upon a time, in a village", "--end", " and learning new things every day! One day, they "
    "stumbled upon a magical forest full of vibrant colors and fascinating creatures.", "--move",
    " there lived a curious kiwi named", "--top", "5", "--rule", "full",
)  # fmt: skip
"""The `frost score` example `frost demo` opens with."""
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
VAL_KEYS = {
    "best": "val/best_of_8",
    "mean": "val/reward_mean",
    "entropy": "val/token_entropy",
    "var": "val/score_var",
    "zero_var": "val/frac_zero_var",
    "copy": "val/frac_copy_begin",
}


@dataclass
class ArmRun:
    """One demo run: its arm, the label in tables, its seed and its run folder."""

    arm: str
    label: str
    seed: int
    run_dir: Path


def config_path(name: str) -> Path:
    """A shipped config (from the source tree's `configs/`)."""
    path = CONFIG_DIR / name
    if not path.is_file():
        from frost.errors import ConfigError

        raise ConfigError(f"demo: {path} is missing; run the demo from a checkout of the Frost repository")
    return path


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, validation records) of a run."""
    records = run_metrics.read_metrics(run_dir / "metrics.jsonl")
    return [r for r in records if "loss" in r], [r for r in records if "val/reward_mean" in r]


def summarize(runs: list[ArmRun]) -> dict[str, Any]:
    """Per arm: validation curves (mean, min, max over seeds) and final numbers, step wall time, judge passes."""
    out: dict[str, Any] = {}
    for arm, _, label in ARMS:
        mine = [r for r in runs if r.arm == arm]
        if not mine:
            continue
        curves: dict[int, dict[str, list[float]]] = {}
        step_times, fwd, bwd = [], [], []
        for run in mine:
            train, val = read_metrics(run.run_dir)
            step_times += [r["time/step_s"] for r in train]
            fwd += [r["judge_fwd_seqs"] for r in train]
            bwd += [r["judge_bwd_seqs"] for r in train]
            for r in val:
                c = curves.setdefault(r["step"], {k: [] for k in VAL_KEYS})
                for key, name in VAL_KEYS.items():
                    c[key].append(r[name])
        steps = sorted(curves)

        def stats(values: list[float]) -> dict[str, float]:
            return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}

        out[arm] = {
            "label": label,
            "seeds": sorted(r.seed for r in mine),
            "steps": steps,
            "curves": {s: {k: stats(v) for k, v in curves[s].items()} for s in steps},
            "final": {k: stats(v) for k, v in curves[steps[-1]].items()} if steps else {},
            "start": {k: stats(v) for k, v in curves[steps[0]].items()} if steps else {},
            "step_s_median": statistics.median(step_times) if step_times else float("nan"),
            "judge_fwd_per_step": statistics.fmean(fwd) if fwd else float("nan"),
            "judge_bwd_per_step": statistics.fmean(bwd) if bwd else float("nan"),
        }
    return out


def _spread(start: dict[str, float], final: dict[str, float]) -> str:
    return f"{start['mean']:.2f} -> **{final['mean']:.2f}** [{final['min']:.2f}, {final['max']:.2f}]"


def _change(start: dict[str, Any], final: dict[str, Any], key: str, digits: int = 2) -> str:
    return f"{start[key]['mean']:.{digits}f} -> {final[key]['mean']:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    """The comparison table: final validation metrics, mean over seeds with [min, max]."""
    lines = [
        "| arm | seeds | val best-of-8: start -> final | val mean reward: start -> final | token entropy "
        "| score variance | zero-variance groups | best copies x | step s (median) | judge fwd / bwd seqs per step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary.values():
        if not s["final"]:
            continue
        b, f = s["start"], s["final"]
        lines.append(
            f"| {s['label']} | {len(s['seeds'])} | {_spread(b['best'], f['best'])} | {_spread(b['mean'], f['mean'])} "
            f"| {_change(b, f, 'entropy')} | {_change(b, f, 'var', 0)} | {_change(b, f, 'zero_var')} "
            f"| {_change(b, f, 'copy')} | {s['step_s_median']:.1f} "
            f"| {s['judge_fwd_per_step']:.0f} / {s['judge_bwd_per_step']:.0f} |"
        )
    curve_lines = ["", "Validation best-of-8 by step (mean over seeds):", ""]
    arms = [s for s in summary.values() if s["steps"]]
    if arms:
        steps = arms[0]["steps"]
        curve_lines.append("| step | " + " | ".join(s["label"] for s in arms) + " |")
        curve_lines.append("|---" * (len(arms) + 1) + "|")
        for step in steps:
            cells = [f"{s['curves'][step]['best']['mean']:.2f}" if step in s["curves"] else "" for s in arms]
            curve_lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines + curve_lines)


def run_demo(out: Path, *, seeds: list[int], steps: int | None, threads: int = 0, progress: bool = True) -> str:
    """Train the three arms for each seed (resuming finished or interrupted runs), then compare them."""
    import torch

    from frost.config import load_config
    from frost.run.checkpoint import finished_step
    from frost.run.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    runs: list[ArmRun] = []
    for seed in seeds:
        for arm, config_name, label in ARMS:
            run_dir = out / "runs" / f"{arm}-seed{seed}"
            overrides = [f"train.seed={seed}", f"train.run_dir={json.dumps(str(run_dir))}"]
            if steps is not None:
                overrides.append(f"train.steps={steps}")
            config = load_config(config_path(config_name), overrides)
            runs.append(ArmRun(arm, label, seed, run_dir))
            finished = finished_step(run_dir)
            if finished is not None and finished >= config.train.steps:
                print(f"[{label}, seed {seed}] already trained ({run_dir})", flush=True)
                continue
            print(f"[{label}, seed {seed}] training {config.train.steps} steps -> {run_dir}", flush=True)
            trainer = Trainer(config, resume=finished is not None, overwrite=True)
            trainer.run(progress=progress)
    summary = summarize(runs)
    table = markdown(summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(summary, indent=1, default=str))
    from frost.analysis.report import write_report

    write_report([r.run_dir for r in runs], out / "report")
    return table
