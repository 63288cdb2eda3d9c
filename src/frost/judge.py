"""The judge: exact rewards of moves, and the one-backward Taylor scores of all their single-token mutations.

For a move y_k of L tokens, write g_kj = dR/dE[y_k[j]], the gradient of the reward with respect to the input
embedding of its j-th token, with the judge's weights frozen. The first-order (GCG / HotFlip) estimate of the reward
after setting token j to v is (§2.1, Eq. 2)

    a(k, j, v) = R(y_k) + (E[v] - E[y_k[j]]) . g_kj.

The gradient cannot see the judge's own log-probability of the token at position j (it depends on the token's
*index*, not on its input embedding), so the `full` mode adds its exact change, free from the same forward (Eq. 1):

    a_full(k, j, v) = a(k, j, v) + log P_J(v | prefix, y<j) - log P_J(y_k[j] | prefix, y<j)

(the last two terms only when the move itself is scored). Games with sign -1 negate the reward and both terms.

One forward and one backward over the K parents give their exact rewards, every g_kj and every position term.
Moves of different lengths (games with a stop token) are batched right-padded: the judge is causal, so no real token
sees the padding, and no mask is needed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from frost.agreement import ALONE, Agreement, fits
from frost.errors import ConfigError, FrostError
from frost.games import GameInstance
from frost.models import cache_io, causal_lm_logits, check_fits_context, lm_head_logits, no_grad
from frost.moves import content_lengths, content_mask
from frost.padding import PromptBatch

TaylorMode = Literal["first-order", "full"]
TAYLOR_MODES: tuple[str, ...] = ("first-order", "full")


def check_mode(mode: str) -> TaylorMode:
    """Validate a Taylor mode name."""
    if mode not in TAYLOR_MODES:
        raise ConfigError(f"mode must be one of {', '.join(TAYLOR_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


GRID_CHUNK_BYTES = 64 * 2**20
"""At most this many bytes of float32 embedding rows are made at once for the Taylor grid (low-precision judges)."""


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """float32 matmuls in full float32 inside (CUDA otherwise may use TF32, whose 10-bit inputs would round the
    Taylor scores about as much as bf16 does)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def gradient_term(grad_rows: torch.Tensor, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """T = (E[v] - E[y]) . g for a block of rows: `grad_rows` [R, H], `tokens` [R] -> [R, V], computed in float32.

    The gradient stays float32; a low-precision embedding matrix (bf16 on a GPU) is widened to float32 in chunks of
    vocabulary rows (`GRID_CHUNK_BYTES`), so the grid never rounds the gradient to the model's dtype. The v = y entry
    is exactly zero (it is subtracted from the same product).
    """
    grad = grad_rows.float()
    with exact_float32():
        if embedding.dtype == torch.float32:
            dots = grad @ embedding.T
        else:
            vocab, hidden = embedding.shape
            step = max(1, GRID_CHUNK_BYTES // (4 * hidden))
            dots = torch.empty(grad.shape[0], vocab, device=grad.device)
            for lo in range(0, vocab, step):
                dots[:, lo : lo + step] = grad @ embedding[lo : lo + step].float().T
    return dots.sub_(dots.gather(1, tokens.view(-1, 1)))


def own_term(logprob_rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """O = log P_J(v | ...) - log P_J(y | ...) for a block of rows: [R, V], [R] -> [R, V]."""
    rows = logprob_rows.float()
    return rows - rows.gather(1, tokens.view(-1, 1))


@dataclass
class JudgeScores:
    """The judge's log-probabilities of every target token of a batch of moves (columns: judge positions
    `first`, `first` + 1, ..., right-padded), and which of them count."""

    logprobs: torch.Tensor
    """[N, T] log P_J(token | everything before it), float32 (0 in padding)."""
    scored: torch.Tensor
    """[N, T] bool: tokens that count in the reward."""
    in_move: torch.Tensor
    """[N, T] bool: the move's own tokens (and its stop token when the judge sees it)."""
    sign: int
    """The game's sign: reward = sign * sum of the scored log-probabilities."""

    @property
    def rewards(self) -> torch.Tensor:
        """[N] exact rewards (nats)."""
        return self.sign * (self.logprobs * self.scored).sum(-1)

    @property
    def move_logprob(self) -> torch.Tensor:
        """[N] the scored log-probability of the move's own tokens (0 when the move is not scored)."""
        return (self.logprobs * (self.scored & self.in_move)).sum(-1)

    @property
    def rest_logprob(self) -> torch.Tensor:
        """[N] the scored log-probability of everything but the move (e.g. the end z of infilling)."""
        return (self.logprobs * (self.scored & ~self.in_move)).sum(-1)

    def scored_values(self, i: int) -> list[float]:
        """The scored log-probabilities of move i, in judge order."""
        return self.logprobs[i][self.scored[i]].tolist()

    def take(self, index: torch.Tensor | slice) -> JudgeScores:
        """The scores of some moves."""
        return JudgeScores(self.logprobs[index], self.scored[index], self.in_move[index], self.sign)


@dataclass
class TaylorResult:
    """What one judge forward+backward over K parent moves gives."""

    moves: torch.Tensor
    """[K, L] the parents' token ids."""
    scores: JudgeScores
    """The judge's log-probabilities of the parents' target tokens; `rewards` are theirs."""
    grad: torch.Tensor | None
    """[K, L, H] g_kj = dR/dE[y_k[j]], float32; None when the pass ran without a backward."""
    judge_logprobs: torch.Tensor
    """[K, L, V] log P_J(v | prefix, y_k[<j]) over the whole vocabulary, float32."""
    embedding: torch.Tensor
    """[V, H] the judge's input embedding matrix (a reference, not a copy)."""
    move_scored: bool
    """Whether the move's own tokens count in the reward (then the `full` mode adds the position term)."""
    valid: torch.Tensor
    """[K, L] bool: the slots that hold content (every slot for fixed-length games); the grid's other rows are
    never proposed."""
    sign: int = 1
    """The game's sign (the position term is sign * the log-probability change)."""

    @property
    def rewards(self) -> torch.Tensor:
        """[K] exact rewards R(y_k), float32."""
        return self.scores.rewards

    @property
    def shape(self) -> tuple[int, int, int]:
        """(K, L, V) of the mutation grid."""
        k, length = self.moves.shape
        return k, length, self.embedding.shape[0]

    def take(self, index: torch.Tensor | slice) -> TaylorResult:
        """The Taylor result of some parents only (every per-parent quantity is independent of the others)."""
        return TaylorResult(
            moves=self.moves[index],
            scores=self.scores.take(index),
            grad=None if self.grad is None else self.grad[index],
            judge_logprobs=self.judge_logprobs[index],
            embedding=self.embedding,
            move_scored=self.move_scored,
            valid=self.valid[index],
            sign=self.sign,
        )

    def rows_gradient_term(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """T over flattened (k, j) rows `rows` (indices into K*L, or a slice of them): [R, V], a fresh tensor."""
        k, length, _ = self.shape
        if self.grad is None:
            raise ValueError("this TaylorResult was computed with with_grad=False; it has no gradient term")
        grad = self.grad.reshape(k * length, -1)[rows]
        return gradient_term(grad, self.moves.reshape(-1)[rows], self.embedding)

    def rows_judge_logprobs(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """sign * log P_J(v | prefix, y<j) over flattened (k, j) rows: [R, V] (a view for a slice when the sign is
        +1); zero when the move is not scored, so that the position term vanishes."""
        k, length, v = self.shape
        flat = self.judge_logprobs.reshape(k * length, v)[rows]
        if not self.move_scored:
            return torch.zeros_like(flat)
        return flat if self.sign == 1 else -flat

    def rows_own_term(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """O over flattened (k, j) rows: [R, V], a fresh tensor; zero when the move is not scored."""
        return own_term(self.rows_judge_logprobs(rows), self.moves.reshape(-1)[rows])

    def approx(self, mode: str = "first-order") -> torch.Tensor:
        """a(k, j, v) for every parent, position and token: [K, L, V] (materialises the whole grid; rows of slots
        without content are -inf)."""
        check_mode(mode)
        k, length, v = self.shape
        rows = torch.arange(k * length, device=self.moves.device)
        grid = self.rows_gradient_term(rows)
        if mode == "full":
            grid = grid + self.rows_own_term(rows)
        grid = grid.view(k, length, v) + self.rewards.view(k, 1, 1)
        return grid.masked_fill(~self.valid.unsqueeze(-1), float("-inf"))


def _pad_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [n_i, T_i] chunks along the batch, right-padding each to the widest with zeros (False)."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


Item = tuple[GameInstance, torch.Tensor]
"""A game instance and moves [N, L] of it: what the judge's batched methods take, one per text."""


@dataclass
class _Batch:
    """The judge's input for a chunk of move rows (of one or several instances)."""

    ids: torch.Tensor
    """[n, T] token ids, right-padded."""
    scored: torch.Tensor
    """[n, T - first] bool over the targets first..T-1."""
    in_move: torch.Tensor
    """[n, T - first] bool."""
    first: int
    """The first target position of the chunk (every earlier token is context only)."""
    offsets: list[int]
    """Per row, its own instance's first target minus `first` (where the row's columns begin)."""
    ends: list[int]
    """Per row, its length minus `first` (where the row's columns end)."""
    starts: torch.Tensor
    """[n] the position of each row's first move token."""
    tokens: int
    """Real (unpadded) tokens in the batch."""


class JudgeOutOfMemory(FrostError):
    """Even one sequence per judge pass does not fit in memory."""


class Judge:
    """A frozen causal LM that scores moves of a Cross-Entropy Game exactly, from token ids.

    `context` is entered around every judge pass; when the judge shares weights with a LoRA player it is the
    adapter-disabling context, so no second copy of the base model is needed.

    A pass takes at most `batch_size` sequences, and fewer when their float32 logits ([n, T, V]) would exceed
    `logits_bytes` (default: 128 MiB on the CPU, where the full-vocabulary softmax and its gradient are bound by
    memory traffic and smaller chunks run faster; 4 GiB on a GPU).
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 16,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        logits_bytes: int | None = None,
        prefix_cache: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"judge.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self.logits_bytes = logits_bytes
        self.prefix_cache = prefix_cache
        """Encode each text's judge prefix once per pass and run its moves from that KV cache (`_logits`): None
        where that saves tokens (`_cached`), True wherever the model allows it, False never."""
        self._context = context or contextlib.nullcontext
        self.forward_sequences = 0
        """Sequences passed forward so far (compute accounting)."""
        self.backward_sequences = 0
        """Sequences passed backward so far."""
        self.forward_tokens = 0
        """Judge tokens passed forward so far (padding excluded)."""
        self.agreement: Agreement = ALONE
        """How this judge agrees on pass sizes and out-of-memory back-off with the ranks that share its base (an
        FSDP group sets `frost.run.distributed.ShardGroupAgreement`; `frost.agreement`)."""

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the judge's weights (bf16 on a GPU by default)."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def embedding(self) -> torch.Tensor:
        """The effective input embedding matrix [V, H]: what the model adds to its residual stream for each token.

        Models whose embedding layer scales its output (Gemma's `embed_scale`) get the scaled table, so that
        `(E[v] - E[y]) . g` is the first-order change for gradients taken at the embedding layer's output.
        """
        layer = self.model.get_input_embeddings()
        scale = getattr(layer, "embed_scale", None)
        weight = layer.weight
        return weight if scale is None else weight * scale.to(weight.dtype)

    def rows_per_pass(self, rows: list[tuple[int, GameInstance, list[int]]]) -> int:
        """Sequences per judge pass for these rows: `batch_size`, fewer when their logits exceed `logits_bytes`."""
        budget = self.logits_bytes
        if budget is None:
            budget = 4 * 2**30 if self.device.type == "cuda" else 128 * 2**20
        return max(1, min(self.batch_size, budget // self._logits_bytes_per_row(rows)))

    def _logits_bytes_per_row(self, rows: list[tuple[int, GameInstance, list[int]]]) -> int:
        """Bytes of one row's float32 logits in a pass over these rows (the largest buffer of a pass)."""
        width = max(inst.judge_length(inst.move_length) for _, inst, _ in rows)
        width -= min(self.first_target(inst) for _, inst, _ in rows) - 1
        return 4 * width * self.model.get_input_embeddings().weight.shape[0]

    @staticmethod
    def first_target(inst: GameInstance) -> int:
        """The first judge position whose prediction the judge needs: the first scored token, or the move's first
        token when it comes earlier (its position term)."""
        lengths = {inst.move_length, 1}
        first = min(min(inst.scored_positions(n), default=10**9) for n in lengths)
        if inst.move_start > 0:
            first = min(first, inst.move_start)
        if first < 1:
            raise ConfigError(
                "game instance: the first scored token has no judge context; start the judge with `start`"
            )
        return first

    def _batch(self, rows: list[tuple[GameInstance, list[int]]]) -> _Batch:
        firsts = [self.first_target(inst) for inst, _ in rows]
        first = min(firsts)
        ids_rows = [inst.judge_ids(m) for inst, m in rows]
        width = max(len(r) for r in ids_rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        scored = torch.zeros(len(rows), width, dtype=torch.bool)
        in_move = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, ((inst, move), row) in enumerate(zip(rows, ids_rows, strict=True)):
            n = int(content_lengths(inst, torch.tensor([move]))[0])
            ids[i, : len(row)] = torch.tensor(row)
            scored[i, inst.scored_positions(n)] = True
            in_move[i, inst.move_start : inst.move_start + n + int(inst.judge_sees_stop)] = True
        dev = self.device
        return _Batch(
            ids=ids.to(dev),
            scored=scored[:, first:].to(dev),
            in_move=in_move[:, first:].to(dev),
            first=first,
            offsets=[f - first for f in firsts],
            ends=[len(r) - first for r in ids_rows],
            starts=torch.tensor([inst.move_start for inst, _ in rows], device=dev),
            tokens=sum(map(len, ids_rows)),
        )

    def _cached(self, rows: list[tuple[int, GameInstance, list[int]]], n_items: int) -> bool:
        """Whether a call's passes run from the texts' prefix caches: when the prefix tokens it saves are at least
        the tokens every row still runs (the move and what follows it), every prefix is non-empty, and the model's
        decoder and LM head can be called apart. Decided once per call, so that every row of a call (parents
        re-scored with their children) goes through the same kernels. (Measured on the CPU: RLP's 65-token prefix
        runs from the cache; infilling's 9 tokens before a 72-token rest would only add the cache's overhead.)"""
        model = self.model
        config = getattr(model, "config", None)
        texts = {owner: inst for owner, inst, _ in rows}
        saved = sum(len(inst.judge_prefix) for _, inst, _ in rows) - sum(len(i.judge_prefix) for i in texts.values())
        rest = sum(inst.judge_length(inst.move_length) - len(inst.judge_prefix) for _, inst, _ in rows)
        return (
            self.prefix_cache is not False
            and (saved >= rest if self.prefix_cache is None else len(rows) > n_items)
            and all(len(inst.judge_prefix) > 0 for _, inst, _ in rows)
            and hasattr(model, "get_decoder")
            and hasattr(model, "get_output_embeddings")
            and not getattr(config, "final_logit_softcapping", None)
        )

    def _logits(
        self,
        batch: _Batch,
        rows: list[tuple[int, GameInstance, list[int]]],
        *,
        cached: bool,
        embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[n, T - first, V] the logits that predict the targets first..T-1 of each row (from `embeds` [n, T, H]
        when given, else from the ids).

        `cached`: each text's judge prefix (the tokens before the move, the same for all its moves) is encoded once
        without gradient, its KV cache repeated for the text's rows, and only the move and what follows it run per
        row; the prefix's logits and the rows' are joined into the same layout as a full forward's. The prefix does
        not depend on the move, so the gradient to the move embeddings is unchanged."""
        n, width = batch.ids.shape
        first = batch.first
        if not cached:
            inputs = {"input_ids": batch.ids} if embeds is None else {"inputs_embeds": embeds}
            return causal_lm_logits(self.model, **inputs, keep=width - first + 1)[:, :-1]
        dev = self.device
        owners = [owner for owner, _, _ in rows]
        texts = list(dict.fromkeys(owners))
        text_of = torch.tensor([texts.index(o) for o in owners], device=dev)
        prefixes = [next(inst.judge_prefix for o, inst, _ in rows if o == t) for t in texts]
        prompt = PromptBatch.build(prefixes, dev)
        plen = torch.tensor(prompt.lengths, device=dev)
        keep = max(prompt.lengths) - first + 1  # prefix columns whose logits predict a target
        decoder = self.model.get_decoder()
        cache_kw, cache_attr = cache_io(decoder)
        with torch.no_grad():
            out = decoder(**prompt.forward_kwargs(), use_cache=True)
            prefix_logits = lm_head_logits(self.model, out.last_hidden_state[:, -keep:].contiguous())
        cache = getattr(out, cache_attr)
        cache.batch_select_indices(text_of)
        starts = plen[text_of]  # [n] where each row's move begins
        span = width - int(plen.min())  # move and everything after it, right-padded
        cols = (starts.view(-1, 1) + torch.arange(span, device=dev).view(1, -1)).clamp(max=width - 1)
        if embeds is None:
            inputs = {"input_ids": batch.ids.gather(1, cols)}
        else:
            inputs = {"inputs_embeds": embeds.gather(1, cols.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))}
        step: dict[str, torch.Tensor] = {}
        if prompt.mask is not None:
            ones = torch.ones(n, span, dtype=prompt.mask.dtype, device=dev)
            step = {
                "attention_mask": torch.cat([prompt.mask[text_of], ones], 1),
                "position_ids": starts.view(-1, 1) + torch.arange(span, device=dev).view(1, -1),
            }
        hidden = decoder(**inputs, use_cache=True, **{cache_kw: cache}, **step).last_hidden_state
        rest_logits = lm_head_logits(self.model, hidden[:, : span - 1].contiguous())
        joined = torch.cat([prefix_logits[text_of].to(rest_logits.dtype), rest_logits], 1)
        # the logits predicting target t sit at joined column keep - plen + t - 1, before and after the move alike
        index = (keep - starts.view(-1, 1) + first - 1) + torch.arange(width - first, device=dev).view(1, -1)
        index = index.clamp(max=joined.shape[1] - 1)
        return joined.gather(1, index.unsqueeze(-1).expand(-1, -1, joined.shape[-1]))

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        with self._context():
            yield

    def _target_logprobs(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log-softmax of `logits` [N, T, V] at `targets` [N, T], float32, without a [N, T, V] log-softmax copy."""
        logits = logits.float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    @staticmethod
    def _by_instance(
        owners: list[int], n_items: int, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Regroup per-row (logprobs, scored, in_move) rows, each already aligned to its instance's first target,
        into one right-padded triple per instance."""
        out = []
        for item in range(n_items):
            rows = [parts[r] for r, owner in enumerate(owners) if owner == item]
            out.append(tuple(_pad_cat([row[c].unsqueeze(0) for row in rows]) for c in range(3)))
        return out  # type: ignore[return-value]

    def _each_pass(self, rows: list[tuple[int, GameInstance, list[int]]], one_pass: Callable[[slice], None]) -> None:
        """Run `one_pass` over consecutive chunks of `rows` (`rows_per_pass`, the smallest any rank of an FSDP group
        proposes); on out-of-memory, halve the chunk (for this judge from then on, with one warning per size) and
        run the failed chunk again. In an FSDP group every rank first allocates the chunk's logits and the group
        agrees on the outcome (`frost.agreement.fits`), so a rank that runs out of memory there halves the chunk
        with the others; one that runs out inside the sharded layers stops the run."""
        agreement = self.agreement
        size, pos = agreement.smallest(self.rows_per_pass(rows)), 0
        per_row = self._logits_bytes_per_row(rows)
        while pos < len(rows):
            stop = min(pos + size, len(rows))
            if not fits(agreement, (stop - pos) * per_row, self.device, "judge"):
                size = self._back_off(stop - pos)
                continue
            try:
                one_pass(slice(pos, stop))
            except torch.OutOfMemoryError:
                if agreement.shared:
                    raise JudgeOutOfMemory(
                        f"judge: out of memory inside a pass of {stop - pos} sequences on one rank of an FSDP group, "
                        "where its ranks cannot back off apart; set model.judge_batch_size lower"
                    ) from None
                size = self._back_off(stop - pos)
                continue
            pos = stop

    def _back_off(self, failed: int) -> int:
        """Halve the sequences per pass after `failed` did not fit (for this judge from then on); one warning."""
        if failed <= 1:
            raise JudgeOutOfMemory(
                "judge: out of memory with one sequence per pass; use a device with more memory, a smaller model or "
                "shorter game texts"
            ) from None
        size = failed // 2
        self.batch_size = min(self.batch_size, size)
        warnings.warn(f"judge: out of memory at {failed} sequences per pass; continuing with {size}", stacklevel=4)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return size

    def score_many(self, items: list[Item]) -> list[JudgeScores]:
        """The judge's log-probabilities of every target token of each text's moves, all texts batched together
        (`batch_size` rows per forward, right-padded); identical moves of a text are scored once."""
        checked = [(inst, self._check_moves(inst, moves)) for inst, moves in items]
        uniques = [torch.unique(moves, dim=0, return_inverse=True) for _, moves in checked]
        rows = [(n, inst, m) for n, ((inst, _), (u, _)) in enumerate(zip(checked, uniques, strict=True)) for m in
                u.tolist()]  # fmt: skip
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        cached = self._cached(rows, len(items))

        def one_pass(chunk: slice) -> None:
            batch = self._batch([(inst, m) for _, inst, m in rows[chunk]])
            logits = self._logits(batch, rows[chunk], cached=cached)
            lps = self._target_logprobs(logits, batch.ids[:, batch.first :])
            for i, (lo, hi) in enumerate(zip(batch.offsets, batch.ends, strict=True)):
                parts.append((lps[i, lo:hi], batch.scored[i, lo:hi], batch.in_move[i, lo:hi]))
            self.forward_sequences += batch.ids.shape[0]
            self.forward_tokens += batch.tokens

        with no_grad(self.model), self._eval():
            self._each_pass(rows, one_pass)
        out = []
        grouped = self._by_instance([r[0] for r in rows], len(items), parts)
        for (inst, _), (_, inverse), (lps, scored, in_move) in zip(checked, uniques, grouped, strict=True):
            mask = scored[inverse]
            out.append(JudgeScores(lps[inverse] * mask, mask, in_move[inverse], inst.sign))
        return out

    def score(self, inst: GameInstance, moves: torch.Tensor) -> JudgeScores:
        """The judge's log-probabilities of every target token of each move [N, L] of one text (`score_many`)."""
        return self.score_many([(inst, moves)])[0]

    def rewards_many(self, items: list[Item]) -> list[torch.Tensor]:
        """[N] exact rewards (nats) of each text's moves, all texts batched (`score_many`)."""
        return [s.rewards for s in self.score_many(items)]

    def rewards(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        """[N] exact rewards (nats) of moves [N, L]; identical moves are scored once."""
        return self.score(inst, moves).rewards

    def taylor_many(self, items: list[Item], *, with_grad: bool = True) -> list[TaylorResult]:
        """One forward+backward over the parents of every text (batched together, `batch_size` rows per pass;
        identical parents of a text computed once): rewards, gradients to the move embeddings, position terms; one
        `TaylorResult` per text.

        With `with_grad=False` only the forward runs (rules that do not use the gradient term need no backward).
        """
        checked = [(inst, self._check_moves(inst, moves)) for inst, moves in items]
        lengths = {inst.move_length for inst, _ in checked}
        if len(lengths) != 1:
            raise ConfigError(f"taylor_many: every text needs one move length; got {sorted(lengths)}")
        length = lengths.pop()
        uniques = [torch.unique(moves, dim=0, return_inverse=True) for _, moves in checked]
        rows = [(n, inst, m) for n, ((inst, _), (u, _)) in enumerate(zip(checked, uniques, strict=True)) for m in
                u.tolist()]  # fmt: skip
        emb_layer = self.model.get_input_embeddings()
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        grads: list[torch.Tensor] = []
        judge_lps: list[torch.Tensor] = []
        slots = torch.arange(length, device=self.device).view(1, -1)
        cached = self._cached(rows, len(items))

        def one_pass(chunk: slice) -> None:
            batch = self._batch([(inst, m) for _, inst, m in rows[chunk]])
            n, width = batch.ids.shape
            first = batch.first
            with torch.no_grad():
                embeds = emb_layer(batch.ids)
            embeds.requires_grad_(with_grad)
            with torch.set_grad_enabled(with_grad):
                logits = self._logits(batch, rows[chunk], cached=cached, embeds=embeds)
            targets = batch.ids[:, first:].unsqueeze(-1)
            with torch.no_grad():
                full = logits.detach().float()
                lps = self._target_logprobs(full, targets.squeeze(-1))
            positions = batch.starts.view(-1, 1) + slots  # [n, L] judge positions of the move slots
            inside = positions < width
            if with_grad:
                # d reward / d logits = sign * mask * (one_hot(target) - softmax): one fused softmax instead of
                # autograd's much slower trip back through logsumexp over the [n, T, V] logits
                with torch.no_grad():
                    signs = torch.tensor([float(inst.sign) for _, inst, _ in rows[chunk]], device=self.device)
                    dlogits = torch.softmax(full, dim=-1).neg_()
                    dlogits.scatter_add_(-1, targets, torch.ones_like(targets, dtype=dlogits.dtype))
                    dlogits.mul_((batch.scored * signs.view(-1, 1)).unsqueeze(-1))
                (grad,) = torch.autograd.grad(logits, embeds, grad_outputs=dlogits.to(logits.dtype))
                index = positions.clamp(max=width - 1).unsqueeze(-1).expand(-1, -1, grad.shape[-1])
                chunk_grad = grad.float().gather(1, index) * inside.unsqueeze(-1)
            with torch.no_grad():
                # log P_J(. | prefix, y<j) at slot j: logits column c predicts judge position first + c
                column = positions - first
                has = (column >= 0) & (column < full.shape[1]) & (batch.starts.view(-1, 1) > 0)
                index = column.clamp(0, full.shape[1] - 1).unsqueeze(-1).expand(-1, -1, full.shape[-1])
                own = torch.log_softmax(full.gather(1, index), dim=-1)
                chunk_own = own.masked_fill(~has.unsqueeze(-1), 0.0)
            # nothing is kept before the whole pass has succeeded (an out-of-memory retry runs it again)
            if with_grad:
                grads.append(chunk_grad)
                self.backward_sequences += n
            judge_lps.append(chunk_own)
            for i, (lo, hi) in enumerate(zip(batch.offsets, batch.ends, strict=True)):
                parts.append((lps[i, lo:hi], batch.scored[i, lo:hi], batch.in_move[i, lo:hi]))
            self.forward_sequences += n
            self.forward_tokens += batch.tokens

        with self._eval():
            self._each_pass(rows, one_pass)

        owners = [r[0] for r in rows]
        grouped = self._by_instance(owners, len(items), parts)
        grad_all = torch.cat(grads) if with_grad else None
        judge_all = torch.cat(judge_lps)
        embedding = self.embedding.detach()
        out, lo = [], 0
        for (inst, moves), (u, inverse), (lps, scored, in_move) in zip(checked, uniques, grouped, strict=True):
            rows_of = inverse + lo  # identical parents were computed once
            lo += u.shape[0]
            out.append(
                TaylorResult(
                    moves=moves,
                    scores=JudgeScores((lps * scored)[inverse], scored[inverse], in_move[inverse], inst.sign),
                    grad=None if grad_all is None else grad_all[rows_of],
                    judge_logprobs=judge_all[rows_of],
                    embedding=embedding,
                    move_scored=inst.score_move,
                    valid=content_mask(inst, moves),
                    sign=inst.sign,
                )
            )
        return out

    def taylor(self, inst: GameInstance, moves: torch.Tensor, *, with_grad: bool = True) -> TaylorResult:
        """One forward+backward over the parents of one text (`taylor_many`)."""
        return self.taylor_many([(inst, moves)], with_grad=with_grad)[0]

    def _check_moves(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        moves = torch.as_tensor(moves, dtype=torch.long, device=self.device)
        if moves.dim() == 1:
            moves = moves.unsqueeze(0)
        if moves.dim() != 2 or moves.shape[1] != inst.move_length or moves.shape[0] == 0:
            raise ConfigError(f"moves must be [N, {inst.move_length}] token ids; got shape {tuple(moves.shape)}")
        vocab = self.embedding.shape[0]
        if int(moves.min()) < 0 or int(moves.max()) >= vocab:
            raise ConfigError(f"move token ids must lie in [0, {vocab}); got {int(moves.min())}..{int(moves.max())}")
        check_fits_context(self.model, inst.max_judge_length, "the judge's sequence")
        if inst.stop_id is not None and bool((content_lengths(inst, moves) < 1).any()):
            raise ConfigError("moves: a move has at least one content token before its stop token")
        return moves
