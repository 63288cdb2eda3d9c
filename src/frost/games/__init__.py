"""Cross-Entropy Games: what the player sees, what the judge reads around the move, what is scored.

* `GameInstance`: one position, in token ids (`frost.games.instance`);
* `GameSpec` and `SpecGame`: a game as data, and documents -> instances for any spec (`frost.games.spec`);
* the built-in games infilling, reverse, title, condense and rlp (`frost.games.builtin`);
* games users write in YAML (`frost.games.files`);
* `build_game`: the registry, from `game.kind` (a built-in name or a file) and the game's parameters.

This package imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from frost.errors import ConfigError
from frost.games.builtin import BUILDERS, DEFAULTS, INFILLING_PROMPT, InfillingGame, builtin_spec
from frost.games.files import load_game_file, spec_from_dict, spec_to_yaml
from frost.games.instance import GameInstance, SkipReport, document_start_id, encode_plain, render_prompt
from frost.games.spec import NEAR_COPY, GameSpec, MoveSpec, Part, SpecGame, copies_text, copy_fraction, is_near_copy

BUILTIN_GAMES = tuple(BUILDERS)
GAME_PARAMS = ("move_length", "start", "begin_tokens", "gap_tokens", "end_tokens", "text_tokens", "context_tokens",
               "target_tokens", "target_text", "exact_length")  # fmt: skip
"""The `game` section's fields that parameterise built-in games (each game reads some: `DEFAULTS`)."""


class Game(Protocol):
    """What the rest of Frost needs of a game."""

    name: str
    tokenizer: Any

    def instances(self, documents: Any, *, warn: bool = True) -> tuple[list[GameInstance], SkipReport]:
        """Instances from documents (texts or token ids), with the count of documents skipped and why."""
        ...

    def instance(self, ids: Any, *, source: str = "") -> GameInstance | None:
        """One instance from a tokenised document, or None when it is unusable (too short)."""
        ...

    def cache_key(self) -> str:
        """A string that changes whenever the game's instances would (for caches of built instances)."""
        ...

    def move_text(self, inst: GameInstance, move: Any) -> str:
        """A move's text as the player wrote it (content tokens only)."""
        ...

    def copies(self, inst: GameInstance, move_text: str) -> bool:
        """Whether a move copies what the player was shown (the game's copy metric)."""
        ...


def is_game_file(kind: str) -> bool:
    """Whether `game.kind` names a file rather than a built-in game."""
    return kind not in BUILDERS and (kind.endswith((".yaml", ".yml")) or Path(kind).expanduser().is_file())


def resolve_spec(kind: str, params: dict[str, Any] | None = None) -> GameSpec:
    """The spec of `game.kind` (built-in name or YAML file) with the `game` section's parameters applied.

    A game file takes only `move_length` (it overrides the file's move length); built-in games take the parameters
    listed in `DEFAULTS`. Parameters set to None keep the game's default.
    """
    params = {k: v for k, v in (params or {}).items() if v is not None}
    if is_game_file(kind):
        spec = load_game_file(kind)
        extra = sorted(set(params) - {"move_length"})
        if extra:
            raise ConfigError(f"game.{extra[0]} does not apply to a game file (only game.move_length overrides it)")
        if "move_length" in params:
            if params["move_length"] < 1:
                raise ConfigError(f"game.move_length must be >= 1, got {params['move_length']}")
            spec = GameSpec(**{**spec.__dict__, "move": MoveSpec(params["move_length"], spec.move.stop,
                                                                  spec.move.judge_sees_stop)})  # fmt: skip
        return spec
    return builtin_spec(kind, params)


def build_game(kind: str, tokenizer: Any, params: dict[str, Any] | None = None) -> SpecGame:
    """The game `kind` (a built-in name or a YAML file) for a tokenizer, with the `game` section's parameters."""
    spec = resolve_spec(kind, params)
    if spec.name == "infilling" and not is_game_file(kind):
        p = {**DEFAULTS["infilling"], **{k: v for k, v in (params or {}).items() if v is not None}}
        return InfillingGame(tokenizer, p["move_length"], p["begin_tokens"], p["gap_tokens"], p["end_tokens"],
                             start=p["start"])  # fmt: skip
    return SpecGame(spec, tokenizer)


__all__ = [
    "BUILTIN_GAMES",
    "DEFAULTS",
    "GAME_PARAMS",
    "INFILLING_PROMPT",
    "NEAR_COPY",
    "Game",
    "GameInstance",
    "GameSpec",
    "InfillingGame",
    "MoveSpec",
    "Part",
    "SkipReport",
    "SpecGame",
    "build_game",
    "copies_text",
    "copy_fraction",
    "document_start_id",
    "encode_plain",
    "is_game_file",
    "is_near_copy",
    "load_game_file",
    "render_prompt",
    "resolve_spec",
    "spec_from_dict",
    "spec_to_yaml",
]
