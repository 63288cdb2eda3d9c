"""The figure of `frost experiment` (like the paper's Figure 3, twice): validation best-of-N against judge forwards
and against training wall time, the group diagnostics, each arm's mean over seeds with its 95% interval, and each
arm's paired difference with the reference at matched judge forwards at every validation step of the reference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PANELS = (
    ("judge_fwd", "best", "validation best-of-N (nats)", "judge forward sequences"),
    ("wall_s", "best", "validation best-of-N (nats)", "training wall time (s)"),
    ("judge_fwd", "mean", "validation mean reward (nats)", "judge forward sequences"),
    ("step", "entropy", "token entropy (nats)", "step"),
    ("step", "zero", "zero-variance groups", "step"),
    ("step", "copy", "copies of the beginning", "step"),
)
BOUNDS = {"entropy": (0.0, math.inf), "zero": (0.0, 1.0), "copy": (0.0, 1.0)}
"""The range of a bounded metric: its shaded interval (a t interval over few seeds may run past it) is cut to it."""


def band(key: str, means: list[float], half: list[float]) -> tuple[list[float], list[float]]:
    """The shaded interval `mean +- half` of metric `key`, cut to its range (`BOUNDS`)."""
    low, high = BOUNDS.get(key, (-math.inf, math.inf))
    lo = [max(m - h, low) for m, h in zip(means, half, strict=True)]
    hi = [min(m + h, high) for m, h in zip(means, half, strict=True)]
    return lo, hi


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    """Draw the six panels to `path` (PNG) from `frost.analysis.experiment.runner.summarize`'s output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    colors = {name: f"C{i}" for i, name in enumerate(summary["arms"])}  # one colour per arm in every panel
    matched = axes.flat[len(PANELS)]
    for name, arm in summary["arms"].items():
        curve = arm.get("matched_curve") or []
        if curve:
            xs = [c["reference_judge_fwd"] for c in curve]
            ys = [c["over_seeds"]["mean"] for c in curve]
            half = [c["over_seeds"]["ci95"] for c in curve]
            (line,) = matched.plot(xs, ys, marker="o", markersize=3, label=name, color=colors[name])
            if all(math.isfinite(h) for h in half):
                matched.fill_between(xs, [y - h for y, h in zip(ys, half, strict=True)],
                                     [y + h for y, h in zip(ys, half, strict=True)], color=line.get_color(),
                                     alpha=0.15, linewidth=0)  # fmt: skip
    matched.axhline(0.0, color="grey", linewidth=0.8)
    matched.set_xlabel("reference's judge forward sequences")
    matched.set_ylabel(f"best-of-N minus {summary.get('reference')} at matched judge forwards")
    matched.grid(alpha=0.3)
    if matched.get_legend_handles_labels()[0]:
        matched.legend(fontsize=8)
    axes.flat[len(PANELS) + 1].set_axis_off()
    for ax, (x_key, y_key, y_label, x_label) in zip(axes.flat, PANELS, strict=False):
        for name, arm in summary["arms"].items():
            steps = sorted(arm["curves"], key=int)
            if not steps:
                continue
            points = [arm["curves"][s] for s in steps]
            xs = [float(s) if x_key == "step" else p[x_key]["mean"] for s, p in zip(steps, points, strict=True)]
            ys = [p[y_key]["mean"] for p in points]
            half = [p[y_key]["ci95"] for p in points]
            n = max(p[y_key]["n"] for p in points)
            label = f"{name} ({n} seed{'s' * (n != 1)})"
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=label, color=colors[name])
            if all(math.isfinite(h) for h in half):
                lo, hi = band(y_key, ys, half)
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("frost experiment: mean over seeds, 95% t interval shaded (cut to the range of fractions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
