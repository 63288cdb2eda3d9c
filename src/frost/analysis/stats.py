"""Means with their standard errors: over prompts (`mean_se`), and over a handful of seeds with a Student t interval
(`mean_ci`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
"""Two-sided 95% Student t quantiles for 1..15 degrees of freedom (beyond: 1.96)."""


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean, standard error and the half-width of a 95% Student t interval (NaN with fewer than 2 values)."""
    n = len(values)
    mean = statistics.fmean(values) if values else float("nan")
    if n < 2 or any(math.isnan(v) for v in values):  # a metric some run did not log: no interval
        return {"mean": mean, "se": float("nan"), "ci95": float("nan"), "n": n}
    se = statistics.stdev(values) / math.sqrt(n)
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    return {"mean": mean, "se": se, "ci95": t * se, "n": n}


def pm(mean: float, half: float, spec: str = ".2f") -> str:
    """`mean +- half`, or the mean alone where there is no interval (one seed)."""
    return f"{mean:{spec}}" if math.isnan(half) else f"{mean:{spec}} +- {half:.2f}"


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (NaN, NaN when there are none)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


def paired_summary(diffs: Sequence[float], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired differences (arm minus baseline, per text and seed): mean +- SE and 95% t interval over all pairs,
    wins / losses / ties, each seed's mean (`per_seed`: dicts with "mean"), the seeds won and a 95% t interval over
    the seeds' means (the seed as the unit)."""
    return {
        **mean_ci(list(diffs)),
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "per_seed": per_seed,
        "seeds_won": sum(p["mean"] > 0 for p in per_seed),
        "over_seeds": mean_ci([p["mean"] for p in per_seed]),
    }
