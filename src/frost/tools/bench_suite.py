"""`frost bench` as a whole: which sections to time (`--only`), over which grid of K, L and texts per step, and where
the Markdown sections and the JSON go; under torchrun only the step bench runs, and rank 0 alone prints and writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frost.errors import ConfigError
from frost.games import resolve_spec
from frost.run.distributed import World
from frost.tools.bench import (
    bench_training,
    default_arms,
    markdown,
    option_arms,
    run_bench,
    training_markdown,
    write_section,
)


@dataclass
class BenchRequest:
    """What `frost bench` was asked for (its flags, already checked one by one)."""

    model: str
    device: str
    dtype: str
    random_weights: bool
    game: str
    K: list[int]
    L: list[int]
    B: list[int]
    rules: list[str]
    naive: bool
    repeats: int
    core_K: int
    D: int
    only: str
    frost_D: int | None
    fsdp_shards: int
    out: Path
    json: Path | None

    def check(self, world: World) -> None:
        """Refuse combinations the benches cannot run."""
        resolve_spec(self.game)
        if world.active and self.only != "steps":
            raise ConfigError("--only: under torchrun frost bench times training steps only; add --only steps")
        if self.fsdp_shards > 1 and self.only != "steps":
            raise ConfigError("--fsdp-shards: only the step bench shards the base; add --only steps")


def run_benches(request: BenchRequest, world: World, load: Any) -> None:
    """Time the sections `request.only` names, update their Markdown sections and write the JSON; `load()` gives
    the model of the core bench."""
    r = request
    say = print if world.is_main else (lambda *a, **k: None)
    result: dict[str, Any] = {"ratios": {}}
    if r.only in ("all", "memory-plan"):
        from frost.run.memplan import plan_markdown

        write_section(r.out, "memory-plan", plan_markdown())
        say("memory plan for Qwen3-14B written")
    if r.only in ("all", "core"):
        core = run_bench(load(), out=r.out, json_path=None, K=r.core_K, L=r.L[0], D=r.D, repeats=r.repeats)
        say(markdown(core))
        result["core"] = core
        result["ratios"].update(core["ratios"])
    if r.only in ("all", "steps"):
        grid = [(k, length, b, default_arms(k, r.rules, naive=r.naive)) for k in r.K for length in r.L for b in r.B]
        section = "training" if r.game == "infilling" else f"training-{Path(r.game).stem}"
        result["steps"] = _step_benches(r, grid, section, world, say, result["ratios"])
    if r.only == "options":
        grid = [(k, r.L[0], r.B[0], option_arms(k, r.rules)) for k in r.K]
        result["options"] = _step_benches(r, grid, "training-options", world, say, result["ratios"])
    if not world.is_main:
        return
    if r.json:
        r.json.write_text(json.dumps(result, indent=1))
    print(f"\nwritten to {r.out}" + (f" and {r.json}" if r.json else ""))


def _step_benches(
    r: BenchRequest, grid: list[tuple[int, int, int, Any]], section: str, world: World, say: Any, ratios: dict
) -> list[dict[str, Any]]:
    """One step bench per (K, L, texts per step, arms) of `grid`, printed as it ends; rank 0 writes `section`."""
    overrides = {"frost": {"D": r.frost_D}} if r.frost_D is not None else None
    results, sections = [], []
    for k, length, b, arms in grid:
        steps = bench_training(
            r.model, K=k, L=length, batch_size=b, steps=r.repeats, arms=arms, device=r.device, dtype=r.dtype,
            game=r.game, random_weights=r.random_weights, fsdp_shards=r.fsdp_shards, overrides=overrides,
        )  # fmt: skip
        results.append(steps)
        sections.append(training_markdown(steps))
        say(sections[-1], flush=True)
        for name, value in steps["ratios"].items():
            ratios.setdefault(name, value)
    if world.is_main:
        write_section(r.out, section, "\n\n".join(sections))
    return results
