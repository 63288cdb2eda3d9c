"""Games as data: a `GameSpec` says what the player sees, what the judge reads around the move, what is scored and
with which sign. Every built-in game is a spec (see `frost.games.builtin`), and so is every game a user writes in
YAML (see `frost.games.files`); `SpecGame` turns documents into instances of any spec.

A spec's judge sequence is a list of parts, in order, each scored or not:

* `start`: the model's document-start token (`document_start_id`);
* `doc: [A, B]`: tokens A..B of the document (plain tokenisation, no special tokens);
* `text: "..."`: fixed text, tokenised on its own;
* `move`: the player's move (exactly one part is the move).

The player's prompt is a template sent through the chat template: `{doc:A:B}` inserts the document's tokens A..B
(decoded), `{move_length}` the move length, `{{` and `}}` literal braces.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from frost.errors import ConfigError
from frost.games.instance import GameInstance, SkipReport, document_start_id, encode_plain, render_prompt

PART_KINDS = ("start", "doc", "text", "move")
FORBID_KINDS = ("document_tokens", "newlines")
"""`document_tokens`: no token id that occurs in the document's slices shown to the judge; `newlines`: no token whose
text contains a newline."""
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
EOS_STOP = "eos"
"""`stop: eos` ends a move with the tokenizer's end-of-turn token (the natural end of a chat reply)."""


@dataclass(frozen=True)
class Part:
    """One part of the judge's sequence."""

    kind: str
    """start, doc, text or move."""
    scored: bool = False
    """Whether its tokens count in the reward."""
    span: tuple[int, int] = (0, 0)
    """doc parts: the document's tokens A..B (half-open)."""
    text: str = ""
    """text parts: the fixed text."""


@dataclass(frozen=True)
class MoveSpec:
    """What a move is."""

    length: int
    """L: exactly this many tokens, or, with `stop`, at most this many content tokens."""
    stop: str | None = None
    """Variable-length moves: the text of the (single) token that ends a move, or `eos` for the end of the player's
    reply. None: fixed length."""
    judge_sees_stop: bool = False
    """Whether the stop token follows the move in the judge's sequence (scored when the move is)."""


@dataclass(frozen=True)
class GameSpec:
    """A Cross-Entropy Game as data."""

    name: str
    move: MoveSpec
    player: str
    """The player's prompt template."""
    judge: tuple[Part, ...]
    sign: int = 1
    forbid: tuple[str, ...] = ()
    use_chat_template: bool = True
    """Format the player's prompt with the tokenizer's chat template when it has one."""
    allow: str | None = None
    """When set, a move may use only the tokens of this text (e.g. a fixed list of words)."""
    copy_metric: str = "document"
    """Validation metric of copying: `document` (the best move's text occurs in the document text the player saw),
    or `begin` (infilling: the best move repeats the beginning x, §3.7)."""

    @property
    def move_index(self) -> int:
        """The position of the move among the judge's parts."""
        return next(i for i, p in enumerate(self.judge) if p.kind == "move")

    @property
    def needs_tokens(self) -> int:
        """Shortest usable document, in tokens: the end of the largest doc slice (judge or player)."""
        ends = [p.span[1] for p in self.judge if p.kind == "doc"]
        ends += [b for _, b in prompt_slices(self.player)]
        return max(ends, default=0)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain dicts (what a game file holds)."""
        return asdict(self)

    def key(self) -> str:
        """A hash of everything that defines the game (for caches)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def prompt_slices(template: str) -> list[tuple[int, int]]:
    """The `{doc:A:B}` slices a player template uses (an error for any other placeholder)."""
    out = []
    for name in PLACEHOLDER.findall(template.replace("{{", "").replace("}}", "")):
        if name == "move_length":
            continue
        m = re.fullmatch(r"doc:(-?\d+):(-?\d+)", name)
        if not m:
            raise ConfigError(
                f"player: unknown placeholder {{{name}}}; use {{doc:A:B}} (document tokens A..B), {{move_length}}, "
                "or {{ and }} for literal braces"
            )
        a, b = int(m.group(1)), int(m.group(2))
        if a < 0 or b <= a:
            raise ConfigError(f"player: placeholder {{{name}}} needs 0 <= A < B")
        out.append((a, b))
    return out


def check_spec(spec: GameSpec) -> GameSpec:
    """Validate a spec; one line naming the field on the first problem."""
    if not spec.name:
        raise ConfigError("name: a game needs a name")
    moves = [p for p in spec.judge if p.kind == "move"]
    if not moves:
        raise ConfigError("judge: no move part; add `- move: true` where the player's move goes")
    if len(moves) > 1:
        raise ConfigError("judge: two move parts; a game has exactly one move")
    for p in spec.judge:
        if p.kind not in PART_KINDS:
            raise ConfigError(f"judge: unknown part {p.kind!r}; parts are {', '.join(PART_KINDS)}")
        if p.kind == "doc" and not 0 <= p.span[0] < p.span[1]:
            raise ConfigError(
                f"judge: doc slice {list(p.span)} is out of order or negative; use [A, B] with 0 <= A < B"
            )
        if p.kind == "text" and not p.text:
            raise ConfigError("judge: a text part needs non-empty text")
    if not any(p.scored for p in spec.judge):
        raise ConfigError("judge: nothing is scored; mark at least one part `scored: true`")
    if spec.sign not in (1, -1):
        raise ConfigError(f"sign must be 1 or -1, got {spec.sign!r}")
    if spec.move.length < 1:
        raise ConfigError(f"move: the move length must be >= 1, got {spec.move.length}")
    for f in spec.forbid:
        if f not in FORBID_KINDS:
            raise ConfigError(f"forbid: unknown entry {f!r}; use {', '.join(FORBID_KINDS)}")
    if spec.copy_metric not in ("document", "begin"):
        raise ConfigError(f"copy_metric must be document or begin, got {spec.copy_metric!r}")
    prompt_slices(spec.player)
    if spec.judge[spec.move_index].scored and spec.move_index == 0:
        raise ConfigError("judge: a scored move needs a part before it (e.g. `- start: true`)")
    return spec


@cache
def _newline_ids(tokenizer: Any) -> tuple[int, ...]:
    return tuple(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))


def newline_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids of every token whose text contains a newline (computed once per tokenizer)."""
    try:
        return _newline_ids(tokenizer)
    except TypeError:  # an unhashable tokenizer
        return tuple(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))


def special_token_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's special tokens (never part of a move)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            special.add(int(token_id))
    return special


@dataclass
class SpecGame:
    """A game played from a `GameSpec`: documents in, game instances out."""

    spec: GameSpec
    tokenizer: Any
    _stop_id: int | None = field(default=None, init=False, repr=False)
    _start_id: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_spec(self.spec)
        self._start_id = document_start_id(self.tokenizer)
        if any(p.kind == "start" for p in self.spec.judge) and self._start_id is None:
            raise ConfigError("judge: `start` needs a document-start token, and this tokenizer has none")
        stop = self.spec.move.stop
        if stop is not None:
            if stop == EOS_STOP:
                eos = getattr(self.tokenizer, "eos_token_id", None)
                if eos is None:
                    raise ConfigError("move.stop: `eos` needs a tokenizer with an end-of-turn (EOS) token")
                self._stop_id = int(eos)
            else:
                ids = encode_plain(self.tokenizer, stop)
                if len(ids) != 1:
                    raise ConfigError(f"move.stop: {stop!r} is {len(ids)} tokens; the stop must be exactly one token")
                self._stop_id = ids[0]
        self._global_forbidden = self._static_forbidden()

    @property
    def name(self) -> str:
        """The game's name (its spec's)."""
        return self.spec.name

    @property
    def move_length(self) -> int:
        """L, the move's length in tokens (a move may stop earlier when the game allows a stop token)."""
        return self.spec.move.length

    def _static_forbidden(self) -> set[int]:
        out: set[int] = set()
        if "newlines" in self.spec.forbid:
            out.update(newline_token_ids(self.tokenizer))
        self._allowed: tuple[int, ...] | None = None
        if self.spec.allow is not None:
            self._allowed = tuple(sorted(set(encode_plain(self.tokenizer, self.spec.allow))))
        usable = set(self._allowed) if self._allowed is not None else set(range(len(self.tokenizer)))
        usable -= out | special_token_ids(self.tokenizer)
        if self._stop_id is not None:
            usable.discard(self._stop_id)
        if not usable:
            raise ConfigError("forbid/allow: every token is forbidden, so no move can ever be produced")
        if self._stop_id is not None:
            out.discard(self._stop_id)
        return out

    def cache_key(self) -> str:
        """What instances depend on besides the documents and the tokenizer."""
        return self.spec.key()

    # --------------------------------------------------------------------------------------------- instances
    def _slice(self, ids: Sequence[int], span: tuple[int, int]) -> list[int]:
        return list(ids[span[0] : span[1]])

    def prompt_text(self, doc_ids: Sequence[int]) -> str:
        """The player's user message for a tokenised document."""

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "move_length":
                return str(self.spec.move.length)
            a, b = (int(v) for v in name.split(":")[1:])
            return str(self.tokenizer.decode(self._slice(doc_ids, (a, b))))

        parts = self.spec.player.split("{{")
        filled = [PLACEHOLDER.sub(fill, p.replace("}}", "\0")).replace("\0", "}") for p in parts]
        return "{".join(filled)

    def instance(self, ids: Sequence[int], *, source: str = "") -> GameInstance | None:
        """The game instance of one tokenised document, or None when it is too short."""
        if len(ids) < self.spec.needs_tokens:
            return None
        before: list[int] = []
        after: list[int] = []
        prefix_scored: list[tuple[int, int]] = []
        suffix_scored: list[tuple[int, int]] = []
        shown: list[int] = []
        move_index = self.spec.move_index
        for i, part in enumerate(self.spec.judge):
            if part.kind == "move":
                continue
            if part.kind == "start":
                toks = [int(self._start_id)]  # type: ignore[arg-type]
            elif part.kind == "doc":
                toks = self._slice(ids, part.span)
                shown += toks
            else:
                toks = encode_plain(self.tokenizer, part.text)
            target, spans = (before, prefix_scored) if i < move_index else (after, suffix_scored)
            if part.scored and toks:
                spans.append((len(target), len(target) + len(toks)))
            target += toks
        forbidden: set[int] = set(self._global_forbidden)
        if "document_tokens" in self.spec.forbid:
            forbidden.update(shown)
        if self._stop_id is not None:
            forbidden.discard(self._stop_id)
        prompt = render_prompt(self.tokenizer, self.prompt_text(ids), use_chat_template=self.spec.use_chat_template)
        meta: dict[str, Any] = {"shown_text": [self.tokenizer.decode(self._slice(ids, s)) for s in self._shown()]}
        if self.spec.copy_metric == "begin":
            first_doc = next(p for p in self.spec.judge if p.kind == "doc")
            meta["begin_ids"] = self._slice(ids, first_doc.span)
        return GameInstance(
            prompt_ids=tuple(prompt),
            judge_prefix=tuple(before),
            judge_suffix=tuple(after),
            move_length=self.spec.move.length,
            score_move=self.spec.judge[move_index].scored,
            suffix_scored=tuple(suffix_scored),
            prefix_scored=tuple(prefix_scored),
            sign=self.spec.sign,
            stop_id=self._stop_id,
            judge_sees_stop=self.spec.move.judge_sees_stop and self._stop_id is not None,
            forbidden_ids=tuple(sorted(forbidden)),
            allowed_ids=self._allowed,
            source=source,
            meta=meta,
        )

    def _shown(self) -> list[tuple[int, int]]:
        """Document slices the player's prompt shows."""
        return prompt_slices(self.spec.player)

    def instances(
        self, documents: Iterable[tuple[str, str]], *, warn: bool = True
    ) -> tuple[list[GameInstance], SkipReport]:
        """Game instances of `(source, text)` documents, in order; too-short ones are skipped and counted (one
        warning says how many)."""
        out: list[GameInstance] = []
        skipped = SkipReport()
        for source, text in documents:
            inst = self.instance(encode_plain(self.tokenizer, text), source=source)
            if inst is None:
                skipped.counts[f"shorter than {self.spec.needs_tokens} tokens"] += 1
            else:
                out.append(inst)
        if warn and skipped.total:
            warnings.warn(
                f"skipped {skipped.total} of {skipped.total + len(out)} documents: {skipped.summary()} "
                f"(game {self.name} needs {self.spec.needs_tokens} tokens)",
                stacklevel=2,
            )
        return out, skipped

    # ------------------------------------------------------------------------------------------------ display
    def move_text(self, inst: GameInstance, move: Sequence[int]) -> str:
        """The text of a move row (its content, without the stop token)."""
        return str(self.tokenizer.decode(list(move[: inst.content_length(move)])))

    def shown_text(self, inst: GameInstance) -> str:
        """The document text the player was shown, that a copying move repeats: infilling's beginning x, else the
        shown spans joined by blank lines."""
        if self.spec.copy_metric == "begin":
            return str(self.tokenizer.decode(list(inst.meta.get("begin_ids", []))))
        return "\n\n".join(inst.meta.get("shown_text", []))

    def copies(self, inst: GameInstance, move_text: str) -> bool:
        """Whether a move copies what the player was shown (see `GameSpec.copy_metric`)."""
        if self.spec.copy_metric == "begin":
            return copies_text(move_text, str(self.tokenizer.decode(list(inst.meta.get("begin_ids", [])))))
        a = _normal(move_text)
        return bool(a) and any(a in _normal(t) for t in inst.meta.get("shown_text", []))

    @property
    def copy_metric_name(self) -> str:
        """Name of the copy metric in logs: `copy_begin` (infilling) or `copy_document`."""
        return f"copy_{self.spec.copy_metric}"


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


NEAR_COPY = 0.7
"""A move is a near-copy of the text the player was shown when `copy_fraction` is at least this."""


def words(text: str) -> list[str]:
    """Lower-case word tokens (runs of letters, digits and underscores): case, punctuation and spacing dropped."""
    return re.findall(r"\w+", text.lower())


def copy_fraction(move_text: str, shown_text: str) -> float:
    """The longest run of consecutive words the move shares with the shown text, over the move's words (0 for a
    move without words). Case, punctuation and spacing do not count, so " the sun beat down" copies "The sun beat
    down" (1.0) and "a cat sat down" shares "sat down" with "the dog sat down" (0.5)."""
    move, shown = words(move_text), words(shown_text)
    if not move or not shown:
        return 0.0
    best = 0
    previous = [0] * (len(shown) + 1)
    for a in move:
        current = [0] * (len(shown) + 1)
        for j, b in enumerate(shown, start=1):
            if a == b:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best / len(move)


def is_near_copy(move_text: str, shown_text: str) -> bool:
    """Whether `copy_fraction` reaches `NEAR_COPY`."""
    return copy_fraction(move_text, shown_text) >= NEAR_COPY


def copies_text(move_text: str, begin_text: str) -> bool:
    """Whether a move repeats a text (the GRPO collapse mode of §3.7): one stripped text contains the other."""
    a, b = _normal(move_text), _normal(begin_text)
    return bool(a) and bool(b) and (a in b or b in a)
