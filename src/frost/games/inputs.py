"""A game and one instance of it from what a user types: a game name or file with its move length and gap, and a
document (text or a file) or, for infilling, a beginning and an end (text or token ids).

The messages name the command-line flags (`--doc`, `--begin-ids`, ...) the keyword arguments are named after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frost.errors import ConfigError
from frost.games import build_game, resolve_spec
from frost.games.instance import GameInstance, encode_plain


def game_from_options(kind: str, tokenizer: Any, *, move_length: int | None = None, gap: int | None = None) -> Any:
    """The game `kind` (a built-in name or a YAML file) with its move length and, for infilling, the gap its prompt
    announces; `None` keeps the game's default."""
    params: dict[str, Any] = {}
    if move_length is not None:
        if move_length < 1:
            raise ConfigError(f"--L must be >= 1, got {move_length}")
        params["move_length"] = move_length
    if gap is not None and resolve_spec(kind).name == "infilling":
        if gap < 0:
            raise ConfigError(f"--gap must be >= 0, got {gap}")
        params["gap_tokens"] = gap
    return build_game(kind, tokenizer, params)


def check_ids(ids: Sequence[int], vocab: int, name: str) -> None:
    """Refuse token ids outside the model's vocabulary, naming `--{name}-ids`."""
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ConfigError(f"--{name}-ids: token ids must lie in [0, {vocab}); got {bad[:5]}")


def text_or_ids(tokenizer: Any, text: str | None, ids: list[int] | None, name: str) -> list[int]:
    """Exactly one of `--{name}` (text, encoded without special tokens) and `--{name}-ids`, not empty."""
    if (text is None) == (ids is None):
        raise ConfigError(f"--{name}: give exactly one of --{name} (text) and --{name}-ids")
    out = ids if ids is not None else encode_plain(tokenizer, text or "")
    if not out:
        raise ConfigError(f"--{name}: the {name} is empty")
    return out


def instance_from_options(
    game: Any,
    vocab: int,
    *,
    doc: str | None = None,
    doc_file: Path | None = None,
    begin: str | None = None,
    begin_ids: list[int] | None = None,
    end: str | None = None,
    end_ids: list[int] | None = None,
) -> GameInstance:
    """The instance of a document (`doc` or `doc_file`) or, for infilling, of a beginning and an end."""
    takes_pairs = hasattr(game, "instance_from_parts")  # infilling
    pair = any(v is not None for v in (begin, begin_ids, end, end_ids))
    if doc_file is not None:
        if doc is not None:
            raise ConfigError("--doc-file: give one of --doc and --doc-file")
        if not doc_file.is_file():
            raise ConfigError(f"--doc-file: {doc_file} does not exist")
        doc = doc_file.read_text()
    if pair and doc is not None:
        raise ConfigError("--doc: give either a document (--doc/--doc-file) or --begin/--end (infilling), not both")
    if pair:
        if not takes_pairs:
            raise ConfigError(f"--begin/--end: only the infilling game takes them; give --doc for {game.name}")
        x = text_or_ids(game.tokenizer, begin, begin_ids, "begin")
        z = text_or_ids(game.tokenizer, end, end_ids, "end")
        check_ids(x, vocab, "begin")
        check_ids(z, vocab, "end")
        return game.instance_from_parts(x, z)
    if doc is None:
        raise ConfigError("--doc: give the document (--doc TEXT or --doc-file FILE)" + (
            ", or --begin and --end" if takes_pairs else ""))  # fmt: skip
    ids = encode_plain(game.tokenizer, doc)
    inst = game.instance(ids, source="--doc")
    if inst is None:
        raise ConfigError(f"--doc: the document has {len(ids)} tokens; game {game.name} needs {game.spec.needs_tokens}")
    return inst
