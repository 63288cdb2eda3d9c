"""Cross-Entropy Games: how the player's prompt is built and how the judge scores a move.

A game instance fixes three things, all as token ids (never re-tokenised text):

* the player's prompt, which ends where the move begins;
* the judge's sequence around the move, `judge_prefix + move + judge_suffix`;
* which judge tokens are scored: the move itself (`score_move`) and a span of the suffix (`suffix_scored`).

The reward of a move is the sum of the judge's log-probabilities (in nats) of the scored tokens. Max-likelihood
infilling (§3.1 of the paper) is `prefix = x`, `suffix = z`, both the move and `z` scored: `R(y) = log P_J(y z | x)`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from frost.errors import ConfigError


@dataclass(frozen=True)
class GameInstance:
    """One position of a Cross-Entropy Game, in token ids."""

    prompt_ids: tuple[int, ...]
    """The player's prompt (chat-formatted where the tokenizer has a template); the move follows it."""
    judge_prefix: tuple[int, ...]
    """Judge tokens before the move (for infilling: an optional BOS, then the beginning x)."""
    judge_suffix: tuple[int, ...]
    """Judge tokens after the move (for infilling: the end z)."""
    move_length: int
    """Number of tokens L in a move."""
    score_move: bool = True
    """Whether the move's own tokens count in the reward."""
    suffix_scored: tuple[int, int] | None = None
    """Half-open span of `judge_suffix` that counts in the reward; None means all of it."""
    source: str = ""
    """Where the instance came from (a document id), for logs."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Free-form extras (e.g. the texts of x and z) for display."""

    def __post_init__(self) -> None:
        if self.move_length < 1:
            raise ConfigError(f"game.move_length must be >= 1, got {self.move_length}")
        if not self.prompt_ids:
            raise ConfigError("game instance: the player's prompt is empty")
        if not self.judge_prefix and self.score_move:
            raise ConfigError("game instance: a scored move needs at least one judge token before it")

    @property
    def judge_length(self) -> int:
        """Length of the judge's token sequence."""
        return len(self.judge_prefix) + self.move_length + len(self.judge_suffix)

    @property
    def move_start(self) -> int:
        """Index of the move's first token in the judge's sequence."""
        return len(self.judge_prefix)

    def scored_positions(self) -> list[int]:
        """Indices (in the judge's sequence) of the tokens whose log-probabilities make the reward."""
        start = self.move_start
        positions = list(range(start, start + self.move_length)) if self.score_move else []
        lo, hi = self.suffix_scored if self.suffix_scored is not None else (0, len(self.judge_suffix))
        suffix_start = start + self.move_length
        positions += [suffix_start + i for i in range(lo, hi)]
        return positions

    def judge_ids(self, move: Sequence[int]) -> list[int]:
        """The judge's sequence for one move."""
        if len(move) != self.move_length:
            raise ConfigError(f"move has {len(move)} tokens; this game instance takes exactly {self.move_length}")
        return [*self.judge_prefix, *move, *self.judge_suffix]


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain text, without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def judge_bos(tokenizer: Any) -> list[int]:
    """`[bos]` when the tokenizer itself starts plain text with BOS (Llama-3, Gemma), else `[]` (Qwen3, SmolLM2)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [int(bos)] if ids and ids[0] == bos else []


def render_prompt(tokenizer: Any, user_text: str, *, use_chat_template: bool = True) -> list[int]:
    """Token ids of the player's prompt: one user turn through the chat template, ready for the assistant's reply.

    `enable_thinking=False` is passed to every template (Qwen3's reads it and closes its think block; others ignore
    it). Without a chat template (a base model) the fallback is the plain text followed by a blank line and `Answer:`.
    """
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}],
            add_generation_prompt=True,
            enable_thinking=False,
            tokenize=True,
        )
        ids = out["input_ids"] if not isinstance(out, list) else out
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return [int(i) for i in ids]
    return judge_bos(tokenizer) + encode_plain(tokenizer, f"{user_text}\n\nAnswer:")


INFILLING_PROMPT = (
    "A text begins with:\n'''\n{begin}\n'''\n\n"
    "After a gap of {gap} tokens, it continues with:\n'''\n{end}\n'''\n\n"
    "Provide exactly {L} tokens to bridge between the opening and the continuation, maximizing the likelihood of the "
    "full sequence. Respond with exactly {L} tokens; only these will be used."
)
"""The player's prompt of Appendix C; `begin`, `end`, `gap` and `L` are substituted per example."""


@dataclass
class SkipReport:
    """Documents that gave no game instance, counted by reason."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


@dataclass
class InfillingGame:
    """Max-likelihood infilling (§3.1, Appendix C): bridge a beginning x and an end z with a move of L tokens.

    From a tokenised document: x = its first `begin_tokens` tokens, z = the `end_tokens` tokens that start
    `gap_tokens` after x. The reward is `log P_J(y z | x)`.
    """

    tokenizer: Any
    move_length: int = 8
    """L, tokens in a move (the paper uses 4, 8 and 12)."""
    begin_tokens: int = 8
    """Tokens in the beginning x."""
    gap_tokens: int = 24
    """Tokens between x and z in the source document (the original gap, told to the player)."""
    end_tokens: int = 64
    """Tokens in the end z."""
    use_chat_template: bool = True
    """Format the prompt with the tokenizer's chat template when it has one."""

    name = "infilling"

    def __post_init__(self) -> None:
        for field_name in ("move_length", "begin_tokens", "end_tokens"):
            if getattr(self, field_name) < 1:
                raise ConfigError(f"game.{field_name} must be >= 1, got {getattr(self, field_name)}")
        if self.gap_tokens < 0:
            raise ConfigError(f"game.gap_tokens must be >= 0, got {self.gap_tokens}")
        self._bos = judge_bos(self.tokenizer)

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

    def prompt_text(self, x: Sequence[int], z: Sequence[int]) -> str:
        """The user message of Appendix C for this (x, z)."""
        begin = self.tokenizer.decode(list(x))
        end = self.tokenizer.decode(list(z))
        return INFILLING_PROMPT.format(begin=begin, end=end, gap=self.gap_tokens, L=self.move_length)

    def instance_from_parts(self, x: Sequence[int], z: Sequence[int], *, source: str = "") -> GameInstance:
        """A game instance from explicit beginning and end ids."""
        if not x:
            raise ConfigError("game: the beginning x is empty")
        prompt = render_prompt(self.tokenizer, self.prompt_text(x, z), use_chat_template=self.use_chat_template)
        return GameInstance(
            prompt_ids=tuple(prompt),
            judge_prefix=tuple(self._bos + list(x)),
            judge_suffix=tuple(z),
            move_length=self.move_length,
            score_move=True,
            source=source,
            meta={"begin_ids": list(x)},
        )

    def instance(self, ids: Sequence[int], *, source: str = "") -> GameInstance | None:
        """The game instance of one tokenised document, or None when it is too short."""
        parts = self.split(ids)
        if parts is None:
            return None
        x, gap, z = parts
        inst = self.instance_from_parts(x, z, source=source)
        inst.meta["gap_ids"] = gap
        return inst

    def instances(
        self, documents: Iterable[tuple[str, str]], *, warn: bool = True
    ) -> tuple[list[GameInstance], SkipReport]:
        """Game instances of `(source, text)` documents, in order; too-short ones are skipped and counted.

        One warning says how many were skipped and why.
        """
        out: list[GameInstance] = []
        skipped = SkipReport()
        for source, text in documents:
            inst = self.instance(encode_plain(self.tokenizer, text), source=source)
            if inst is None:
                skipped.counts[f"shorter than {self.min_document_tokens} tokens"] += 1
            else:
                out.append(inst)
        if warn and skipped.total:
            warnings.warn(
                f"skipped {skipped.total} of {skipped.total + len(out)} documents: {skipped.summary()} "
                f"(infilling needs {self.begin_tokens} + {self.gap_tokens} + {self.end_tokens} tokens)",
                stacklevel=2,
            )
        return out, skipped
