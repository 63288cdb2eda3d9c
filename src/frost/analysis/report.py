"""`frost report RUN_DIR...`: validation curves like the paper's Figures 3 and 4, a final-metrics table, and one
self-contained HTML file (figures embedded, no network needed).

Runs are grouped into methods by their resolved config (algorithm, K, selection rule, move length); seeds of a
method are averaged, with the min-max envelope drawn around the mean.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from frost.errors import ConfigError
from frost.run.metrics import read_metrics

PANELS = (
    ("val/reward_mean", "mean reward"),
    ("val/best_of_8", "best-of-8"),
    ("val/token_entropy", "token entropy"),
    ("val/score_var", "score variance"),
)


@dataclass
class Run:
    """One run folder's validation records and what method it is."""

    path: Path
    method: str
    move_length: int
    seed: int
    game: str = "infilling"
    validation: list[dict[str, Any]] = field(default_factory=list)
    judge_forwards: dict[int, int] = field(default_factory=dict)
    """Cumulative judge forward sequences at each step."""


def method_label(config: dict[str, Any]) -> str:
    """`GRPO K=8` or `Frost K=4, taylor-gated` from a resolved config."""
    train = config.get("train", {})
    k = train.get("K")
    if train.get("algorithm") == "grpo":
        return f"GRPO K={k}"
    return f"Frost K={k}, {config.get('frost', {}).get('rule', 'taylor-gated')}"


def run_game(path: Path, game: dict[str, Any]) -> tuple[str, int]:
    """(game name, move length) of a run's `game` section (its saved game.yaml when the game file moved)."""
    from frost.games import load_game_file, resolve_spec

    params = {k: v for k, v in game.items() if k != "kind"}
    try:
        spec = resolve_spec(str(game.get("kind", "infilling")), params)
    except ConfigError:
        if not (path / "game.yaml").is_file():
            raise
        spec = load_game_file(path / "game.yaml")
    return spec.name, spec.move.length


def load_run(path: Path) -> Run:
    """Read a run folder (config.yaml and metrics.jsonl)."""
    config_path, metrics_path = path / "config.yaml", path / "metrics.jsonl"
    if not config_path.is_file() or not metrics_path.is_file():
        raise ConfigError(f"report: {path} is not a run folder (it needs config.yaml and metrics.jsonl)")
    config = yaml.safe_load(config_path.read_text()) or {}
    game, length = run_game(path, config.get("game", {}))
    run = Run(
        path=path,
        method=method_label(config),
        move_length=length,
        seed=int(config.get("train", {}).get("seed", 0)),
        game=game,
    )
    total = 0
    run.judge_forwards[0] = 0
    for record in read_metrics(metrics_path):
        if "val/reward_mean" in record:
            run.validation.append(record)
        elif "judge_fwd_seqs" in record:
            total += int(record["judge_fwd_seqs"])
            run.judge_forwards[int(record["step"])] = total
    return run


def _smooth(values: list[float], window: int) -> list[float]:
    if window <= 1:
        return values
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def curves(runs: list[Run], key: str, *, x_axis: str = "step") -> dict[str, dict[str, list[float]]]:
    """Per method: x, mean, min and max of `key` over seeds, at the validation steps all its seeds share."""
    out: dict[str, dict[str, list[float]]] = {}
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        per_step: dict[int, list[float]] = {}
        for run in mine:
            for record in run.validation:
                if key in record:
                    per_step.setdefault(int(record["step"]), []).append(float(record[key]))
        steps = sorted(s for s, v in per_step.items() if len(v) == len(mine))
        if x_axis == "judge_forwards":
            xs = [statistics.fmean(r.judge_forwards.get(s, float("nan")) for r in mine) for s in steps]
        else:
            xs = [float(s) for s in steps]
        out[method] = {
            "x": xs,
            "mean": [statistics.fmean(per_step[s]) for s in steps],
            "min": [min(per_step[s]) for s in steps],
            "max": [max(per_step[s]) for s in steps],
            "seeds": [float(len(mine))],
        }
    return out


def method_colors(runs: list[Run]) -> dict[str, str]:
    """One matplotlib colour per method, the same in every figure."""
    return {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(r.method for r in runs))}


def _seeds(n: float) -> str:
    return f"{int(n)} seed" + ("s" if int(n) != 1 else "")


def figure_grid(runs: list[Run], path: Path, *, x_axis: str = "step") -> None:
    """Figure 3: a 2x2 grid of validation metrics against step (or judge forwards), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = method_colors(runs)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for (key, title), ax in zip(PANELS, axes.flat, strict=True):
        for method, c in curves(runs, key, x_axis=x_axis).items():
            if not c["x"]:
                continue
            label = f"{method} ({_seeds(c['seeds'][0])})"
            ax.plot(c["x"], c["mean"], marker="o", markersize=3, label=label, color=colors[method])
            ax.fill_between(c["x"], c["min"], c["max"], color=colors[method], alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("judge forward sequences" if x_axis == "judge_forwards" else "training step")
        ax.set_ylabel("entropy (nats)" if "entropy" in key else "nats" if "var" not in key else "nats²")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Validation: mean over seeds, min-max envelope")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_by_length(runs: list[Run], path: Path, *, smooth: int = 1, x_axis: str = "step") -> None:
    """Figure 4: best-of-8 against step, one panel per move length, one curve per method (smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = method_colors(runs)
    panels = sorted({(r.game, r.move_length) for r in runs})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for (game, length), ax in zip(panels, axes[0], strict=True):
        chosen = [r for r in runs if (r.game, r.move_length) == (game, length)]
        for method, c in curves(chosen, "val/best_of_8", x_axis=x_axis).items():
            if c["x"]:
                ax.plot(c["x"], _smooth(c["mean"], smooth), label=method, color=colors[method])
        ax.set_title(f"best-of-8, L={length}" if game == "infilling" else f"{game}: best-of-8, L={length}")
        ax.set_xlabel("judge forward sequences" if x_axis == "judge_forwards" else "training step")
        ax.set_ylabel("nats")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_table(runs: list[Run]) -> list[dict[str, Any]]:
    """Per method: the last shared validation step's metrics, mean [min, max] over seeds."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        row: dict[str, Any] = {"method": method, "seeds": sum(r.method == method for r in runs)}
        for key, _ in PANELS:
            c = curves(runs, key)[method]
            if c["x"]:
                row["step"] = int(c["x"][-1])
                row[key] = {"mean": c["mean"][-1], "min": c["min"][-1], "max": c["max"][-1]}
        rows.append(row)
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The final-values table as Markdown: per method its seeds, step and each panel's mean [min, max] over seeds."""
    head = "| method | seeds | step | " + " | ".join(title for _, title in PANELS) + " |"
    lines = [head, "|---" * (len(PANELS) + 3) + "|"]
    for row in rows:
        cells = [
            f"{row[k]['mean']:.2f} [{row[k]['min']:.2f}, {row[k]['max']:.2f}]" if k in row else "" for k, _ in PANELS
        ]
        lines.append(f"| {row['method']} | {row['seeds']} | {row.get('step', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(run_dirs: list[Path], out: Path, *, x_axis: str = "step", smooth: int = 1) -> Path:
    """Figures (PNG), the final table (Markdown, JSON) and `report.html` with everything embedded."""
    if not run_dirs:
        raise ConfigError("report: give at least one run folder")
    if x_axis not in ("step", "judge_forwards"):
        raise ConfigError(f"--x must be step or judge_forwards, got {x_axis!r}")
    runs = [load_run(Path(p)) for p in run_dirs]
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "figure3.png": "Validation metrics (as the paper's Figure 3)",
        "figure4.png": "Best-of-8 by move length (as the paper's Figure 4)",
    }
    figure_grid(runs, out / "figure3.png", x_axis=x_axis)
    figure_by_length(runs, out / "figure4.png", smooth=smooth, x_axis=x_axis)
    rows = final_table(runs)
    table = table_markdown(rows)
    (out / "final.md").write_text(table + "\n")
    (out / "final.json").write_text(json.dumps(rows, indent=1))
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode((out / name).read_bytes()).decode()}"><figcaption>{html.escape(title)}</figcaption>'
        "</figure>"
        for name, title in figures.items()
    )
    rows_html = "".join(
        "<tr>"
        + f"<td>{html.escape(r['method'])}</td><td>{r['seeds']}</td><td>{r.get('step', '')}</td>"
        + "".join(
            f"<td>{r[k]['mean']:.2f} [{r[k]['min']:.2f}, {r[k]['max']:.2f}]</td>" if k in r else "<td></td>"
            for k, _ in PANELS
        )
        + "</tr>"
        for r in rows
    )
    runs_html = "".join(f"<li>{html.escape(str(r.path))}: {html.escape(r.method)}, seed {r.seed}</li>" for r in runs)
    header = "".join(f"<th>{html.escape(t)}</th>" for _, t in PANELS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Frost report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head>
<body><h1>Frost report</h1>
<h2>Final validation metrics</h2>
<table><tr><th>method</th><th>seeds</th><th>step</th>{header}</tr>{rows_html}</table>
<h2>Figures</h2>{images}
<h2>Runs</h2><ul>{runs_html}</ul>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
