"""The selection rules of Frost (the paper's four and ours) and the checks of their settings. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from frost.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A selection rule: which signals its ranking score adds up, and whether the probability gate applies."""

    name: str
    signals: tuple[str, ...]
    """Subset of ("T", "O", "P") summed into the ranking score; empty means uniformly random."""
    gated: bool
    """Keep only candidates with pi(v | prompt, y<j) > tau."""
    description: str

    @property
    def needs_gradient(self) -> bool:
        """Whether the judge must run a backward pass for this rule."""
        return "T" in self.signals

    @property
    def estimates_reward(self) -> bool:
        """Whether R(y_k) + score is an estimate of the child's reward (T and O are reward differences; P is not)."""
        return bool(self.signals) and "P" not in self.signals


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("random", (), False, "uniformly random mutations (paper; no signal)"),
        Rule("topprob", ("P",), False, "most probable tokens under the player (paper)"),
        Rule("taylor", ("T",), False, "first-order judge gradient, no gate (paper)"),
        Rule("taylor-gated", ("T",), True, "first-order judge gradient, gated (paper's Algorithm 1)"),
        Rule("full", ("T", "O"), False, "gradient plus the judge's exact position term, no gate"),
        Rule("full-gated", ("T", "O"), True, "gradient plus the judge's exact position term, gated"),
        Rule("judge-gated", ("O",), True, "the judge's exact position term alone, gated (no backward needed)"),
    )
}
PAPER_RULES = ("random", "topprob", "taylor", "taylor-gated")
OLDER_NAMES = {"first-order": "taylor"}
"""Names of earlier releases that still work: `frost score --mode first-order` and `TaylorResult.approx("first-order")`
meant the rule `taylor` (and `--mode full` the rule `full`)."""


def estimating_rule(name: str) -> Rule:
    """A rule whose score is an estimate of the child's reward (T and/or O: taylor, full, judge-gated and their gated
    forms), by name or older name."""
    rule = RULES.get(OLDER_NAMES.get(name, name))
    if rule is None or not rule.estimates_reward:
        estimating = ", ".join(r.name for r in RULES.values() if r.estimates_reward)
        problem = "does not estimate rewards" if rule is not None else "is not a rule"
        raise ConfigError(f"{name!r} {problem}; use a rule that estimates rewards: {estimating} (or first-order)")
    return rule


def get_rule(name: str) -> Rule:
    """Look up a selection rule by name."""
    if name not in RULES:
        raise ConfigError(f"frost.rule must be one of {', '.join(RULES)}; got {name!r}")
    return RULES[name]


RANK_BY = ("reward", "lift")
"""How rules that estimate rewards rank candidates: by the estimated reward of the child, a(k, j, v) = R(y_k) + the
rule's estimated change (Algorithm 1, line 5: the paper), or by the estimated change alone (favours weak parents)."""


def check_rank_by(rank_by: str) -> str:
    """Validate the ranking target."""
    if rank_by not in RANK_BY:
        raise ConfigError(f"frost.rank_by must be one of {', '.join(RANK_BY)}; got {rank_by!r}")
    return rank_by


def check_tau(tau: float) -> float:
    """Validate the probability gate threshold."""
    if not 0.0 < tau < 1.0:
        raise ConfigError(f"frost.tau must lie in (0, 1), got {tau}")
    return tau
