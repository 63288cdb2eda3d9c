"""The `frost` options' value types: each checks a value on its own (a count >= 1, a gate in (0, 1), a known rule)
while parsing, so that a mistake is one line naming the option (argparse's `argument --K: must be >= 1, got 0`)."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable
from typing import Any, NoReturn

from frost.errors import FrostError
from frost.rules import RULES, check_rank_by, check_tau, estimating_rule, get_rule


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `frost score: error: ...`."""

    def error(self, message: str) -> NoReturn:
        """One line naming the problem, exit code 2 (argparse's usage block is left out)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a check that raises `FrostError` or `ValueError` on a bad value."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except (FrostError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def _number(text: str, kind: type, least: float | None) -> Any:
    try:
        value = kind(text)
    except ValueError as exc:
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from exc
    if least is not None and value < least:
        raise ValueError(f"must be >= {least}, got {value}")
    return value


def count(least: int = 1) -> Callable[[str], int]:
    """An integer >= `least`."""
    return _checked(lambda text: _number(text, int, least))


def counts(least: int = 1) -> Callable[[str], list[int]]:
    """Comma-separated integers, at least one, each >= `least`."""

    def check(text: str) -> list[int]:
        parts = [t for t in text.split(",") if t.strip()]
        if not parts:
            raise ValueError(f"expected comma-separated integers >= {least}, got {text!r}")
        return [_number(t, int, least) for t in parts]

    return _checked(check)


def _check_gates(text: str) -> list[float]:
    gates = [check_tau(_number(t, float, None)) for t in text.split(",") if t.strip()]
    if not gates:
        raise ValueError("give at least one gate, e.g. --tau 1e-4")
    return gates


gate = _checked(lambda text: check_tau(_number(text, float, None)))
"""A probability gate tau in (0, 1)."""
gates = _checked(_check_gates)
"""Comma-separated gates, at least one."""
rank_by = _checked(check_rank_by)
"""frost.rank_by: reward or lift."""
rule = _checked(lambda text: get_rule(text).name)
"""A selection rule's name (`frost rules`)."""
estimating = _checked(lambda text: estimating_rule(text).name)
"""A rule whose score estimates the child's reward (or an older name of one: first-order = taylor)."""


def rule_list(text: str) -> list[str]:
    """Comma-separated rules, at least one; 'all' for every rule."""
    if text == "all":
        return list(RULES)
    rules = [rule(r.strip()) for r in text.split(",") if r.strip()]
    if not rules:
        raise argparse.ArgumentTypeError("give at least one Frost rule (see `frost rules`)")
    return rules


def ids(text: str) -> list[int]:
    """Token ids separated by commas or spaces, at least one."""
    try:
        found = [int(t) for t in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected token ids separated by commas or spaces, got {text!r}") from exc
    if not found:
        raise argparse.ArgumentTypeError("no token ids given")
    return found


def _clock(text: str, now: datetime.datetime | None = None) -> float:
    """A time as `time.time()` gives it: `HH:MM` (the next such local time) or an ISO date and time."""
    now = now or datetime.datetime.now()
    try:
        if len(text) <= 5 and ":" in text:
            hour, minute = (int(x) for x in text.split(":"))
            then = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if then <= now:
                then += datetime.timedelta(days=1)
        else:
            then = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"expected HH:MM or an ISO date and time, got {text!r}") from exc
    return then.timestamp()


clock = _checked(_clock)
"""A time of day (`HH:MM`, the next one) or an ISO date and time, as seconds since the epoch."""
