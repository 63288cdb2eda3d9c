"""The built-in Cross-Entropy Games, each a `GameSpec` built from a few parameters.

| game | player writes | judge reads (scored in caps) | reward |
|---|---|---|---|
| infilling | exactly L tokens bridging x and z | start, x, MOVE, Z | log P(y z / x) |
| reverse | a prefix p of exactly L tokens | start, p, T | log P(t / p) |
| title | a title of exactly N tokens (or at most N) | start, "Title:", TITLE, "\\n\\n", S | log P(title s / "Title:") |
| condense | a description x of at most N tokens (or exactly N) | start, x, "\\n\\n", S | log P(s / x) |
| rlp | a thought of exactly L tokens | start, c, thought, NEXT | log P(next / c, thought) |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from frost.errors import ConfigError
from frost.games.instance import GameInstance
from frost.games.spec import EOS_STOP, GameSpec, MoveSpec, Part, SpecGame

INFILLING_PROMPT = (
    "A text begins with:\n'''\n{begin}\n'''\n\n"
    "After a gap of {gap} tokens, it continues with:\n'''\n{end}\n'''\n\n"
    "Provide exactly {L} tokens to bridge between the opening and the continuation, maximizing the likelihood of the "
    "full sequence. Respond with exactly {L} tokens; only these will be used."
)
"""The player's prompt of Appendix C; `begin`, `end`, `gap` and `L` are substituted per example."""

REVERSE_PROMPT = (
    "Here is a passage:\n'''\n{target}\n'''\n\n"
    "Write the text that comes right before it: exactly {move_length} tokens after which the passage follows "
    "naturally. Respond with those {move_length} tokens only."
)
TITLE_PROMPT = (
    "Give the text below a title of LENGTH {move_length} tokens that tells a reader as much about the text as "
    "possible. The title may not reuse any token of the text. Respond with the title only.\n\nThe text:\n{doc:0:TEXT}"
)
CONDENSE_PROMPT = (
    "Describe the story below in LENGTH {move_length} tokens, so that a reader of your description could predict "
    "the story as well as possible. Respond with the description only.\n\nThe story:\n{doc:0:TEXT}"
)
RLP_PROMPT = (
    "Here is the beginning of a text:\n'''\n{doc:0:CONTEXT}\n'''\n\n"
    "Before it continues, think about what comes next: write a thought of exactly {move_length} tokens that helps to "
    "predict the next words. Respond with the thought only."
)

DEFAULTS: dict[str, dict[str, Any]] = {
    "infilling": {"move_length": 8, "start": True, "begin_tokens": 8, "gap_tokens": 24, "end_tokens": 64},
    "reverse": {"move_length": 8, "start": True, "target_tokens": 32, "target_text": None},
    "title": {"move_length": 10, "start": True, "text_tokens": 128, "exact_length": True},
    "condense": {"move_length": 16, "start": True, "text_tokens": 64, "exact_length": False},
    "rlp": {"move_length": 8, "start": True, "context_tokens": 64, "target_tokens": 16},
}
"""Each built-in game's parameters (the `game` section's fields it reads) and their defaults."""


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _start(on: bool) -> list[Part]:
    return [Part("start")] if on else []


def infilling_spec(p: dict[str, Any]) -> GameSpec:
    """Infilling: the player bridges the beginning and the end; the judge scores the move and the end after the
    beginning (R = log P(y z | x))."""
    b, g, e, L = p["begin_tokens"], p["gap_tokens"], p["end_tokens"], p["move_length"]
    player = INFILLING_PROMPT.format(begin=f"{{doc:0:{b}}}", end=f"{{doc:{b + g}:{b + g + e}}}", gap=g, L=L)
    judge = [*_start(p["start"]), Part("doc", span=(0, b)), Part("move", scored=True)]
    judge.append(Part("doc", scored=True, span=(b + g, b + g + e)))
    return GameSpec("infilling", MoveSpec(L), player, tuple(judge), copy_metric="begin")


def reverse_spec(p: dict[str, Any]) -> GameSpec:
    """Reverse prompting: the move is a prompt after which the judge scores a target (the document's start or a
    fixed text)."""
    t = p["target_tokens"]
    fixed = p["target_text"]
    target = Part("text", scored=True, text=fixed) if fixed else Part("doc", scored=True, span=(0, t))
    player = REVERSE_PROMPT.replace("{target}", _escape(fixed) if fixed else f"{{doc:0:{t}}}")
    judge = (*_start(p["start"]), Part("move"), target)
    return GameSpec("reverse", MoveSpec(p["move_length"]), player, judge)


def _sized(p: dict[str, Any], prompt: str) -> tuple[MoveSpec, str]:
    """The move and prompt of a game whose move is exactly `move_length` tokens or ends at the player's end of reply
    (at most `move_length`), as `exact_length` says."""
    if p["exact_length"]:
        return MoveSpec(p["move_length"]), prompt.replace("LENGTH", "exactly")
    return MoveSpec(p["move_length"], stop=EOS_STOP), prompt.replace("LENGTH", "at most")


def title_spec(p: dict[str, Any]) -> GameSpec:
    """Title: the judge scores the move as a title and the text after it; the move may not use the text's tokens
    (the authors' demo game: exactly `move_length` tokens; with `exact_length` false the title ends at the player's
    end of reply, and since every title token is scored, a trained player shortens it: docs/results.md)."""
    s = p["text_tokens"]
    judge = (
        *_start(p["start"]),
        Part("text", text="Title:"),
        Part("move", scored=True),
        Part("text", text="\n\n"),
        Part("doc", scored=True, span=(0, s)),
    )
    move, prompt = _sized(p, TITLE_PROMPT.replace("TEXT", str(s)))
    return GameSpec("title", move, prompt, judge, forbid=("document_tokens", "newlines"))


def condense_spec(p: dict[str, Any]) -> GameSpec:
    """Condense: the move is a short stand-in after which the judge scores the whole text."""
    s = p["text_tokens"]
    judge = (*_start(p["start"]), Part("move"), Part("text", text="\n\n"), Part("doc", scored=True, span=(0, s)))
    move, prompt = _sized(p, CONDENSE_PROMPT.replace("TEXT", str(s)))
    return GameSpec("condense", move, prompt, judge, forbid=("newlines",))


def rlp_spec(p: dict[str, Any]) -> GameSpec:
    """RLP: the move is a thought between a context and its continuation; the judge scores the continuation."""
    c, n = p["context_tokens"], p["target_tokens"]
    judge = (
        *_start(p["start"]),
        Part("doc", span=(0, c)),
        Part("move"),
        Part("doc", scored=True, span=(c, c + n)),
    )
    return GameSpec("rlp", MoveSpec(p["move_length"]), RLP_PROMPT.replace("CONTEXT", str(c)), judge)


BUILDERS = {
    "infilling": infilling_spec,
    "reverse": reverse_spec,
    "title": title_spec,
    "condense": condense_spec,
    "rlp": rlp_spec,
}


def builtin_spec(name: str, params: dict[str, Any] | None = None) -> GameSpec:
    """The spec of a built-in game; `params` (None values ignored) override its defaults (`DEFAULTS`)."""
    if name not in BUILDERS:
        raise ConfigError(f"game.kind: unknown game {name!r}; built-in games are {', '.join(BUILDERS)}, or a YAML file")
    values = dict(DEFAULTS[name])
    for key, value in (params or {}).items():
        if value is None:
            continue
        if key not in values:
            raise ConfigError(f"game.{key} does not apply to the {name} game (its fields: {', '.join(sorted(values))})")
        values[key] = value
    for key, value in values.items():
        if key == "gap_tokens" and value < 0:
            raise ConfigError(f"game.gap_tokens must be >= 0, got {value}")
        if key == "exact_length" and not isinstance(value, bool):
            raise ConfigError(f"game.exact_length must be true or false, got {value!r}")
        positive = (key.endswith("_tokens") and key != "gap_tokens") or key == "move_length"
        if positive and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"game.{key} must be an integer >= 1, got {value!r}")
    return BUILDERS[name](values)


class InfillingGame(SpecGame):
    """Max-likelihood infilling (§3.1, Appendix C): bridge a beginning x and an end z with a move of L tokens.

    From a tokenised document: x = its first `begin_tokens` tokens, z = the `end_tokens` tokens that start
    `gap_tokens` after x. The reward is `log P_J(y z | start, x)`.
    """

    def __init__(
        self,
        tokenizer: Any,
        move_length: int = 8,
        begin_tokens: int = 8,
        gap_tokens: int = 24,
        end_tokens: int = 64,
        *,
        start: bool = True,
        use_chat_template: bool = True,
    ) -> None:
        self.params = {
            "move_length": move_length,
            "start": start,
            "begin_tokens": begin_tokens,
            "gap_tokens": gap_tokens,
            "end_tokens": end_tokens,
        }
        spec = builtin_spec("infilling", self.params)
        if not use_chat_template:
            spec = GameSpec(**{**spec.__dict__, "use_chat_template": False})
        super().__init__(spec, tokenizer)

    @property
    def begin_tokens(self) -> int:
        """Tokens of the beginning x the player is shown."""
        return int(self.params["begin_tokens"])

    @property
    def gap_tokens(self) -> int:
        """Tokens of the original gap the move replaces."""
        return int(self.params["gap_tokens"])

    @property
    def end_tokens(self) -> int:
        """Tokens of the end z the judge scores after the move."""
        return int(self.params["end_tokens"])

    @property
    def min_document_tokens(self) -> int:
        """Shortest usable document, in tokens."""
        return self.begin_tokens + self.gap_tokens + self.end_tokens

    def split(self, ids: Sequence[int]) -> tuple[list[int], list[int], list[int]] | None:
        """(x, original gap, z) of a tokenised document, or None when it is too short."""
        if len(ids) < self.min_document_tokens:
            return None
        b, g, e = self.begin_tokens, self.gap_tokens, self.end_tokens
        return list(ids[:b]), list(ids[b : b + g]), list(ids[b + g : b + g + e])

    def instance(self, ids: Sequence[int], *, source: str = "") -> GameInstance | None:
        """The spec game's instance with the original gap's ids kept in `meta["gap_ids"]`, or None when too short."""
        inst = super().instance(ids, source=source)
        if inst is not None:
            b, g = self.begin_tokens, self.gap_tokens
            inst.meta["gap_ids"] = list(ids[b : b + g])
        return inst

    def instance_from_parts(self, x: Sequence[int], z: Sequence[int], *, source: str = "") -> GameInstance:
        """A game instance from explicit beginning and end ids (any lengths; the gap the prompt announces stays)."""
        if not x:
            raise ConfigError("game: the beginning x is empty")
        if not z:
            raise ConfigError("game: the end z is empty")
        shaped = InfillingGame(
            self.tokenizer,
            self.move_length,
            len(x),
            self.gap_tokens,
            len(z),
            start=bool(self.params["start"]),
            use_chat_template=self.spec.use_chat_template,
        )
        filler = [x[0]] * self.gap_tokens  # never shown: the gap is neither in the prompt nor in the judge's sequence
        inst = SpecGame.instance(shaped, [*x, *filler, *z], source=source)
        assert inst is not None
        return inst
