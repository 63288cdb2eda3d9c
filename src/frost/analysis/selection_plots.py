"""Figures of the selection experiment, drawn like the paper's Figures 1, 2, 5 and 6 (mean over prompts, shaded
+-1 standard error)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RULE_ORDER = ("taylor-gated", "taylor", "topprob", "random", "full-gated", "full", "judge-gated")
"""The paper's four rules first, then ours; also the colour order."""

METRIC_LABELS = {
    "best_after": "best-of-K after replacement (nats)",
    "lift": "best-of-K lift over no replacement (nats)",
    "hit_rate": "hit rate",
    "frac_replaced": "fraction of parents replaced",
    "mean_lift": "mean lift of accepted children (nats)",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(rule: str) -> str:
    index = RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)
    return f"C{index % 10}"


def _line(ax: Any, xs: list[float], entries: list[dict[str, Any]], metric: str, **style: Any) -> None:
    """One curve with its +-1 SE band (NaN standard errors draw no band)."""
    ys = [e[metric] for e in entries]
    ses = [e[f"{metric}_se"] for e in entries]
    ax.plot(xs, ys, marker="o", markersize=3, **style)
    lo = [y - s if s == s else y for y, s in zip(ys, ses, strict=True)]
    hi = [y + s if s == s else y for y, s in zip(ys, ses, strict=True)]
    ax.fill_between(xs, lo, hi, alpha=0.18, color=style.get("color"), linewidth=0)


def _series(
    summary: Sequence[dict[str, Any]], keep: Callable[[dict[str, Any]], bool], x: str
) -> dict[tuple[str, float | None], list[dict[str, Any]]]:
    """Entries passing `keep`, grouped by (rule, tau) and sorted by `x`, rules in RULE_ORDER."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for e in summary:
        if keep(e):
            groups.setdefault((e["rule"], e["tau"]), []).append(e)
    order = {r: i for i, r in enumerate(RULE_ORDER)}
    keys = sorted(groups, key=lambda k: (order.get(k[0], len(order)), -(k[1] or 0.0)))
    return {k: sorted(groups[k], key=lambda e: e[x]) for k in keys}


def _baseline(ax: Any, summary: Sequence[dict[str, Any]], k: int) -> None:
    entry = next(e for e in summary if e["K"] == k)
    ax.axhline(entry["best_before"], color="0.4", linestyle="--", linewidth=1, label="no replacement")


def _finish(plt: Any, fig: Any, legend_ax: Any, title: str, out: Path) -> Path:
    legend_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _prompts(series: dict[Any, list[dict[str, Any]]]) -> int:
    return max(e["prompts"] for es in series.values() for e in es)


def _log2_axis(ax: Any, values: Sequence[int], name: str) -> None:
    positive = sorted(v for v in set(values) if v > 0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(positive)
    ax.set_xticklabels([str(v) for v in positive])
    ax.set_xlabel(name)


def figure_budget(
    summary: Sequence[dict[str, Any]], k: int, tau: float | None, out: Path, metrics: Sequence[str]
) -> Path:
    """Figure 1 (best-of-K and hit rate) or Figure 5 (fraction replaced): metrics against D at fixed K and gate."""
    plt = _pyplot()
    keep = lambda e: e["K"] == k and e["D"] > 0 and e["tau"] in (None, tau)  # noqa: E731
    series = _series(summary, keep, "D")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for (rule, _), entries in series.items():
            _line(ax, [e["D"] for e in entries], entries, metric, color=_color(rule), label=rule)
        if metric == "best_after":
            _baseline(ax, summary, k)
        _log2_axis(ax, [e["D"] for es in series.values() for e in es], "discovery budget D")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    gate = f", τ={tau:g}" if tau is not None else ""
    return _finish(plt, fig, axes[0][0], f"Selection rules at K={k}{gate} ({_prompts(series)} prompts, ±1 SE)", out)


def figure_group_size(summary: Sequence[dict[str, Any]], d: int, tau: float | None, out: Path) -> Path:
    """Figure 2: best-of-K after replacement against K at fixed D, with the no-replacement baseline per K; a second
    panel shows the lift over that baseline with its paired standard error."""
    plt = _pyplot()
    keep = lambda e: e["D"] == d and e["tau"] in (None, tau)  # noqa: E731
    series = _series(summary, keep, "K")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    base = sorted({e["K"]: e for e in summary}.values(), key=lambda e: e["K"])
    for ax, metric in zip(axes, ("best_after", "lift"), strict=True):
        for (rule, _), entries in series.items():
            _line(ax, [e["K"] for e in entries], entries, metric, color=_color(rule), label=rule)
        if metric == "best_after":
            xs, ys = [e["K"] for e in base], [e["best_before"] for e in base]
            ax.plot(xs, ys, "--", color="0.4", label="no replacement")
        _log2_axis(ax, [e["K"] for e in base], "group size K")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    return _finish(plt, fig, axes[0], f"Best-of-K against K at D={d} ({_prompts(series)} prompts, ±1 SE)", out)


def figure_gate(summary: Sequence[dict[str, Any]], k: int, rule: str, out: Path) -> Path:
    """Figure 6: the threshold sweep of one gated rule against D (best-of-K lift over no replacement, which is the
    paper's best-of-K less the same baseline but with the paired standard error; hit rate; mean lift), with its
    ungated counterpart (the same rule without the gate) when the experiment ran it."""
    plt = _pyplot()
    ungated = rule.removesuffix("-gated")
    keep = lambda e: e["K"] == k and e["D"] > 0 and (e["rule"] == rule or e["rule"] == ungated)  # noqa: E731
    series = _series(summary, keep, "D")
    metrics = ("lift", "hit_rate", "mean_lift")
    fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.2))
    taus = sorted({t for (_, t) in series if t is not None}, reverse=True)
    cmap = plt.get_cmap("viridis")
    for ax, metric in zip(axes, metrics, strict=True):
        for (name, t), entries in series.items():
            if t is None:
                style = {"color": "0.3", "linestyle": ":", "label": f"{name} (no gate)"}
            else:
                shade = cmap(taus.index(t) / max(1, len(taus) - 1) * 0.9)
                style = {"color": shade, "label": f"τ={t:g}"}
            _line(ax, [e["D"] for e in entries], entries, metric, **style)
        _log2_axis(ax, [e["D"] for es in series.values() for e in es], "discovery budget D")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    return _finish(plt, fig, axes[0], f"Gate sweep of {rule} at K={k} ({_prompts(series)} prompts, ±1 SE)", out)


def write_figures(summary: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Every figure the experiment's dimensions support: Figures 1 and 5 per K (when D varies), Figure 2 per D (when
    K varies), Figure 6 per gated rule and K (when tau varies). Gated curves use the first (largest) tau unless the
    figure sweeps it."""
    if not summary:
        return []
    out.mkdir(parents=True, exist_ok=True)
    ks = sorted({e["K"] for e in summary})
    ds = sorted({e["D"] for e in summary})
    taus = sorted({e["tau"] for e in summary if e["tau"] is not None}, reverse=True)
    tau = taus[0] if taus else None
    written = []
    if len([d for d in ds if d > 0]) > 1:
        for k in ks:
            suffix = f"-k{k}" if len(ks) > 1 else ""
            written.append(
                figure_budget(
                    summary, k, tau, out / f"figure1-best-of-k{suffix}.png", ["best_after", "lift", "hit_rate"]
                )
            )
            written.append(
                figure_budget(summary, k, tau, out / f"figure5-frac-replaced{suffix}.png", ["frac_replaced"])
            )
    if len(ks) > 1:
        for d in ds:
            suffix = f"-d{d}" if len(ds) > 1 else ""
            written.append(figure_group_size(summary, d, tau, out / f"figure2-group-size{suffix}.png"))
    if len(taus) > 1:
        gated = sorted({e["rule"] for e in summary if e["tau"] is not None})
        for rule in gated:
            for k in ks:
                suffix = f"-k{k}" if len(ks) > 1 else ""
                written.append(figure_gate(summary, k, rule, out / f"figure6-gate-{rule}{suffix}.png"))
    return written
