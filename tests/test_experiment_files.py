"""Every experiment file and game file the repository ships loads, and every run it plans has a valid config (a typo
in a field fails here, not hours into a background run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from frost.analysis.experiment.runner import arm_config, load_experiment
from frost.games.builtin import DEFAULTS, title_spec
from frost.games.files import load_game_file, spec_to_yaml

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


def test_title_exact_is_the_builtin_title_and_the_first_title_experiment_played_the_at_most_one():
    """The demo's title game (experiments/games/title-exact.yaml) is the built-in title; the first title experiment
    (results/evidence2/title, which ran when the built-in title was at most 10 tokens) played what `exact_length:
    false` gives now, as its runs' recorded game.yaml shows, so its file replays the same game."""
    exact = load_game_file(ROOT / "experiments" / "games" / "title-exact.yaml")
    builtin = title_spec(DEFAULTS["title"])
    assert exact.judge == builtin.judge and exact.forbid == builtin.forbid and exact.player == builtin.player
    assert exact.move == builtin.move and builtin.move.length == 10 and builtin.move.stop is None
    at_most = spec_to_yaml(title_spec({**DEFAULTS["title"], "exact_length": False}))
    recorded = sorted((ROOT / "results" / "evidence2" / "title" / "runs").glob("*/game.yaml"))
    assert recorded and all(path.read_text() == at_most for path in recorded)
    experiment = load_experiment(ROOT / "experiments" / "evidence2-title.yaml")
    assert experiment.overrides["game.exact_length"] is False
