"""A game instance: everything one position of a Cross-Entropy Game fixes, as token ids.

* the player's prompt, which ends where the move begins;
* the judge's sequence around the move, `judge_prefix + move + judge_suffix` (plus the stop token after the move when
  the game shows it to the judge);
* which judge tokens are scored (spans of the prefix and the suffix, and the move itself), and the sign;
* what a move may be: exactly `move_length` tokens, or at most `move_length` tokens ended by a stop token, and which
  token ids it may never contain.

The reward of a move is `sign` times the sum of the judge's log-probabilities (nats) of the scored tokens. The judge
always scores token ids: text is never re-tokenised.

Moves are rows of `move_length` ids. A variable-length move holds its n content tokens, then the stop token, which
also fills the rest of the row: its content is the row up to the first stop token (the stop is never content).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from frost.errors import ConfigError

Span = tuple[int, int]


@dataclass(frozen=True)
class GameInstance:
    """One position of a Cross-Entropy Game, in token ids."""

    prompt_ids: tuple[int, ...]
    """The player's prompt (chat-formatted where the tokenizer has a template); the move follows it."""
    judge_prefix: tuple[int, ...]
    """Judge tokens before the move (e.g. the document-start token, then the beginning x)."""
    judge_suffix: tuple[int, ...]
    """Judge tokens after the move (e.g. the end z)."""
    move_length: int
    """L: tokens in a move (fixed-length games), or the most content tokens (games with a stop token)."""
    score_move: bool = True
    """Whether the move's own tokens (and the stop token, when the judge sees it) count in the reward."""
    suffix_scored: tuple[Span, ...] | None = None
    """Half-open spans of `judge_suffix` that count in the reward; None means all of it."""
    prefix_scored: tuple[Span, ...] = ()
    """Half-open spans of `judge_prefix` that count in the reward (they do not depend on the move: a constant)."""
    sign: int = 1
    """+1: the player maximises the scored log-likelihood; -1: minimises it."""
    stop_id: int | None = None
    """Variable-length moves: the token that ends a move (None: every move has exactly `move_length` tokens)."""
    judge_sees_stop: bool = False
    """Whether the stop token follows the move's content in the judge's sequence (scored with the move)."""
    forbidden_ids: tuple[int, ...] = ()
    """Token ids this instance's moves may not contain, beyond the model's special tokens (e.g. the document's own
    tokens in the title game)."""
    allowed_ids: tuple[int, ...] | None = None
    """When set, the only token ids a move may contain (before `forbidden_ids` and the special tokens)."""
    source: str = ""
    """Where the instance came from (a document id), for logs."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Free-form extras for display (e.g. the ids of the infilling beginning, `begin_ids`)."""

    def __post_init__(self) -> None:
        if self.move_length < 1:
            raise ConfigError(f"game.move_length must be >= 1, got {self.move_length}")
        if not self.prompt_ids:
            raise ConfigError("game instance: the player's prompt is empty")
        if self.sign not in (1, -1):
            raise ConfigError(f"game.sign must be 1 or -1, got {self.sign}")
        if self.suffix_scored is not None:
            spans = self.suffix_scored
            if len(spans) == 2 and all(isinstance(v, int) for v in spans):  # one (lo, hi) span
                spans = (spans,)  # type: ignore[assignment]
            object.__setattr__(self, "suffix_scored", tuple(tuple(s) for s in spans))
        object.__setattr__(self, "prefix_scored", tuple(tuple(s) for s in self.prefix_scored))
        for spans, total, name in (
            (self.suffix_spans(), len(self.judge_suffix), "suffix"),
            (self.prefix_scored, len(self.judge_prefix), "prefix"),
        ):
            for lo, hi in spans:
                if not 0 <= lo <= hi <= total:
                    raise ConfigError(f"game instance: scored {name} span {(lo, hi)} lies outside 0..{total}")
        if not self.scores_anything:
            raise ConfigError("game instance scores no token: score the move or a part of the judge's sequence")
        if self.score_move and not self.judge_prefix:
            raise ConfigError("game instance: a scored move needs at least one judge token before it (a start token)")

    # ------------------------------------------------------------------------------------------------ layout
    @property
    def variable_length(self) -> bool:
        """Whether moves end with a stop token (at most `move_length` content tokens)."""
        return self.stop_id is not None

    @property
    def scores_anything(self) -> bool:
        """Whether any judge token is scored (the move, or a non-empty scored span)."""
        return self.score_move or any(hi > lo for lo, hi in (*self.suffix_spans(), *self.prefix_scored))

    @property
    def move_start(self) -> int:
        """Index of the move's first token in the judge's sequence."""
        return len(self.judge_prefix)

    def suffix_spans(self) -> tuple[Span, ...]:
        """The scored spans of the suffix."""
        return ((0, len(self.judge_suffix)),) if self.suffix_scored is None else self.suffix_scored

    def content_length(self, move: Sequence[int]) -> int:
        """Number of content tokens of a move row (up to its first stop token)."""
        if self.stop_id is None:
            return len(move)
        for i, t in enumerate(move):
            if t == self.stop_id:
                return i
        return len(move)

    def judge_length(self, n: int | None = None) -> int:
        """Length of the judge's sequence for a move of `n` content tokens (default: the longest move)."""
        n = self.move_length if n is None else n
        return len(self.judge_prefix) + n + int(self.judge_sees_stop) + len(self.judge_suffix)

    @property
    def max_judge_length(self) -> int:
        """Length of the judge's sequence for the longest move."""
        return self.judge_length()

    def check_move(self, move: Sequence[int]) -> int:
        """The content length of a move row; a clear error when the row has the wrong size or no content."""
        if len(move) != self.move_length:
            raise ConfigError(f"move has {len(move)} tokens; this game instance takes rows of {self.move_length}")
        n = self.content_length(move)
        if n < 1:
            raise ConfigError("move is empty: a move has at least one content token")
        if self.stop_id is not None and any(t != self.stop_id for t in move[n:]):
            raise ConfigError("move row: after the stop token, the row must hold only stop tokens")
        return n

    def pad_move(self, content: Sequence[int]) -> list[int]:
        """A move row from its content tokens (stop-padded for variable-length games)."""
        if self.stop_id is None:
            if len(content) != self.move_length:
                raise ConfigError(f"move has {len(content)} tokens; this game takes exactly {self.move_length}")
            return list(content)
        if not 1 <= len(content) <= self.move_length:
            raise ConfigError(f"move has {len(content)} tokens; this game takes 1 to {self.move_length}")
        if self.stop_id in content:
            raise ConfigError("move: the stop token cannot be part of a move's content")
        return [*content, *[self.stop_id] * (self.move_length - len(content))]

    def judge_ids(self, move: Sequence[int]) -> list[int]:
        """The judge's sequence for one move row."""
        n = self.check_move(move)
        stop = [self.stop_id] if self.judge_sees_stop and self.stop_id is not None else []
        return [*self.judge_prefix, *move[:n], *stop, *self.judge_suffix]

    def scored_positions(self, n: int | None = None) -> list[int]:
        """Indices (in the judge's sequence of a move of `n` content tokens) of the tokens that make the reward."""
        n = self.move_length if n is None else n
        positions = [i for lo, hi in self.prefix_scored for i in range(lo, hi)]
        start = self.move_start
        moved = n + int(self.judge_sees_stop)
        if self.score_move:
            positions += list(range(start, start + moved))
        suffix_start = start + moved
        positions += [suffix_start + i for lo, hi in self.suffix_spans() for i in range(lo, hi)]
        return sorted(set(positions))


@dataclass
class SkipReport:
    """Documents that gave no game instance, counted by reason."""

    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Documents skipped, all reasons together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """The counts in words, e.g. `3 shorter than 72 tokens`."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of plain text, without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def document_start_id(tokenizer: Any) -> int | None:
    """The token that starts a document in the model's pretraining: its BOS when the tokenizer puts one before plain
    text (Llama-3, Gemma); otherwise the end-of-text token that separates documents (`<|endoftext|>` in Qwen3 and
    SmolLM2, as the authors' demo uses), else the EOS token; None when the tokenizer has none of these."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        ids = tokenizer("a")["input_ids"]
        if ids and ids[0] == bos:
            return int(bos)
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is not None:
        vocab = get_vocab()
        if "<|endoftext|>" in vocab:
            return int(vocab["<|endoftext|>"])
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else None


def render_prompt(tokenizer: Any, user_text: str, *, use_chat_template: bool = True) -> list[int]:
    """Token ids of the player's prompt: one user turn through the chat template, ready for the assistant's reply.

    `enable_thinking=False` is passed to every template (Qwen3's reads it and closes its think block; others ignore
    it). Without a chat template (a base model) the fallback is the plain text followed by a blank line and `Answer:`,
    after the BOS when the tokenizer starts plain text with one.
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
    bos = getattr(tokenizer, "bos_token_id", None)
    start = [int(bos)] if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else []
    return start + encode_plain(tokenizer, f"{user_text}\n\nAnswer:")
