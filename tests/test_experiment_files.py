"""Every experiment file and game file the repository ships loads, and every run it plans has a valid config (a typo
in a field fails here, not hours into a background run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from frost.analysis.experiment.runner import arm_config, load_experiment
from frost.games.builtin import DEFAULTS, title_spec
from frost.games.files import load_game_file

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_plans_valid_runs(path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the files name configs and games relative to the repository root
    experiment = load_experiment(path)
    values = [{}] if experiment.grid is None else [{experiment.grid.field: v} for v in experiment.grid.values]
    for arm, seed, _ in experiment.runs():
        for extra in values:
            config = arm_config(experiment, arm, seed, tmp_path / "run", extra)
            assert config.train.seed == seed and config.game.kind


def test_title_exact_is_the_builtin_title_at_a_fixed_length():
    """The demo's title game: the built-in title's judge sequence, prompt and forbidden tokens, but exactly 10 tokens
    (no stop), and the prompt says so."""
    exact = load_game_file(ROOT / "experiments" / "games" / "title-exact.yaml")
    builtin = title_spec(DEFAULTS["title"])
    assert exact.judge == builtin.judge and exact.forbid == builtin.forbid
    assert exact.move.length == builtin.move.length == 10 and exact.move.stop is None and builtin.move.stop == "eos"
    assert exact.player == builtin.player.replace("of at most", "of exactly")
