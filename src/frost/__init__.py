"""Frost: Cross-Entropy Games and Frost-GRPO training."""

from frost.errors import ConfigError, FrostError
from frost.frost import RULES, FrostRecord, frost_step, select_candidates
from frost.games import GameInstance, InfillingGame
from frost.judge import Judge, TaylorResult
from frost.models import load_model
from frost.sampling import SampledMoves, sample_moves

__all__ = [
    "RULES",
    "ConfigError",
    "FrostError",
    "FrostRecord",
    "GameInstance",
    "InfillingGame",
    "Judge",
    "SampledMoves",
    "TaylorResult",
    "frost_step",
    "load_model",
    "sample_moves",
    "select_candidates",
]
__version__ = "0.1.0"
