"""Frost: Cross-Entropy Games and Frost-GRPO training.

The one-call face: `frost.improve(document, game=...)` (the best move for one game instance: sample, Frost rounds,
the best move with its exact reward) and `frost.train(config, overrides)` (a whole run). The names below are
imported on first use, so `import frost.config` (or `frost.games`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "improve": "frost.analysis.infill",
    "Improved": "frost.analysis.infill",
    "Refinement": "frost.analysis.infill",
    "train": "frost.run.api",
    "RunResult": "frost.run.api",
    "RULES": "frost.rules",
    "ConfigError": "frost.errors",
    "FrostError": "frost.errors",
    "FrostRecord": "frost.proposal",
    "frost_step": "frost.proposal",
    "frost_step_batch": "frost.proposal",
    "select_candidates": "frost.proposal",
    "Game": "frost.games",
    "GameInstance": "frost.games",
    "GameSpec": "frost.games",
    "build_game": "frost.games",
    "load_game_file": "frost.games",
    "Judge": "frost.judge",
    "TaylorResult": "frost.judge",
    "load_model": "frost.models",
    "SampledMoves": "frost.sampling",
    "sample_moves": "frost.sampling",
    "sample_moves_batch": "frost.sampling",
    "move_masks": "frost.moves",
    "GroupSettings": "frost.step",
    "play_step": "frost.step",
    "step_loss": "frost.step",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'frost' has no attribute {name!r}")
