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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.models import causal_lm_logits
from frost.moves import content_lengths, content_mask

TaylorMode = Literal["first-order", "full"]
TAYLOR_MODES: tuple[str, ...] = ("first-order", "full")


def check_mode(mode: str) -> TaylorMode:
    """Validate a Taylor mode name."""
    if mode not in TAYLOR_MODES:
        raise ConfigError(f"mode must be one of {', '.join(TAYLOR_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def gradient_term(grad_rows: torch.Tensor, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """T = (E[v] - E[y]) . g for a block of rows: `grad_rows` [R, H], `tokens` [R] -> [R, V] in float32.

    One matmul against the embedding matrix; the v = y entry is exactly zero (it is subtracted from the same product).
    """
    dots = (grad_rows.to(embedding.dtype) @ embedding.T).float()
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


@dataclass
class _Batch:
    """The judge's input for a batch of moves of one instance."""

    ids: torch.Tensor
    """[n, T] token ids, right-padded."""
    scored: torch.Tensor
    """[n, T - first] bool over the targets first..T-1."""
    in_move: torch.Tensor
    """[n, T - first] bool."""
    first: int
    """The first target position (every earlier token is context only)."""
    tokens: int
    """Real (unpadded) tokens in the batch."""


class Judge:
    """A frozen causal LM that scores moves of a Cross-Entropy Game exactly, from token ids.

    `context` is entered around every judge pass; when the judge shares weights with a LoRA player it is the
    adapter-disabling context, so no second copy of the base model is needed.
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 16,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"judge.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        self._context = context or contextlib.nullcontext
        self.forward_sequences = 0
        """Sequences passed forward so far (compute accounting)."""
        self.backward_sequences = 0
        """Sequences passed backward so far."""
        self.forward_tokens = 0
        """Judge tokens passed forward so far (padding excluded)."""

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

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

    def _batch(self, inst: GameInstance, moves: torch.Tensor) -> _Batch:
        first = self.first_target(inst)
        rows = [inst.judge_ids(m) for m in moves.tolist()]
        lengths = content_lengths(inst, moves).tolist()
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        scored = torch.zeros(len(rows), width, dtype=torch.bool)
        in_move = torch.zeros(len(rows), width, dtype=torch.bool)
        moved = int(inst.judge_sees_stop)
        for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
            ids[i, : len(row)] = torch.tensor(row)
            scored[i, inst.scored_positions(n)] = True
            in_move[i, inst.move_start : inst.move_start + n + moved] = True
        dev = self.device
        return _Batch(ids.to(dev), scored[:, first:].to(dev), in_move[:, first:].to(dev), first, sum(map(len, rows)))

    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        with self._context():
            yield

    def _target_logprobs(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log-softmax of `logits` [N, T, V] at `targets` [N, T], float32, without a [N, T, V] log-softmax copy."""
        logits = logits.float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    def score(self, inst: GameInstance, moves: torch.Tensor) -> JudgeScores:
        """The judge's log-probabilities of every target token of each move [N, L] (identical moves scored once)."""
        moves = self._check_moves(inst, moves)
        unique, inverse = torch.unique(moves, dim=0, return_inverse=True)
        lps, scored, in_move = [], [], []
        with torch.inference_mode(), self._eval():
            for chunk in unique.split(self.batch_size):
                batch = self._batch(inst, chunk)
                keep = batch.ids.shape[1] - batch.first + 1
                logits = causal_lm_logits(self.model, input_ids=batch.ids, keep=keep)[:, :-1]
                lps.append(self._target_logprobs(logits, batch.ids[:, batch.first :]))
                scored.append(batch.scored)
                in_move.append(batch.in_move)
                self.forward_sequences += chunk.shape[0]
                self.forward_tokens += batch.tokens
        mask = _pad_cat(scored)[inverse]
        return JudgeScores(_pad_cat(lps)[inverse] * mask, mask, _pad_cat(in_move)[inverse], inst.sign)

    def rewards(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        """[N] exact rewards (nats) of moves [N, L]; identical moves are scored once."""
        return self.score(inst, moves).rewards

    def taylor(self, inst: GameInstance, moves: torch.Tensor, *, with_grad: bool = True) -> TaylorResult:
        """One forward+backward over the parents: rewards, gradients to the move embeddings, position terms.

        With `with_grad=False` only the forward runs (rules that do not use the gradient term need no backward).
        """
        moves = self._check_moves(inst, moves)
        emb_layer = self.model.get_input_embeddings()
        start, length = inst.move_start, inst.move_length
        lps_parts: list[torch.Tensor] = []
        scored_parts: list[torch.Tensor] = []
        in_move_parts: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        judge_lps: list[torch.Tensor] = []
        with self._eval():
            for chunk in moves.split(self.batch_size):
                n = chunk.shape[0]
                batch = self._batch(inst, chunk)
                first, width = batch.first, batch.ids.shape[1]
                keep = width - first + 1
                with torch.no_grad():
                    embeds = emb_layer(batch.ids)
                window = min(length, width - start)
                move_emb = embeds[:, start : start + window].clone().requires_grad_(with_grad)
                with torch.set_grad_enabled(with_grad):
                    full_embeds = torch.cat([embeds[:, :start], move_emb, embeds[:, start + window :]], dim=1)
                    logits = causal_lm_logits(self.model, inputs_embeds=full_embeds, keep=keep)[:, :-1]
                targets = batch.ids[:, first:].unsqueeze(-1)
                mask = batch.scored
                with torch.no_grad():
                    full = logits.detach().float()
                    lps = self._target_logprobs(full, targets.squeeze(-1))
                if with_grad:
                    # d reward / d logits = sign * mask * (one_hot(target) - softmax): one fused softmax instead of
                    # autograd's much slower trip back through logsumexp over the [n, T, V] logits
                    with torch.no_grad():
                        dlogits = torch.softmax(full, dim=-1).neg_()
                        dlogits.scatter_add_(-1, targets, torch.ones_like(targets, dtype=dlogits.dtype))
                        dlogits.mul_((mask * float(inst.sign)).unsqueeze(-1))
                    (grad,) = torch.autograd.grad(logits, move_emb, grad_outputs=dlogits.to(logits.dtype))
                    grad = grad.float()
                    if window < length:
                        grad = torch.nn.functional.pad(grad, (0, 0, 0, length - window))
                    grads.append(grad)
                    self.backward_sequences += n
                with torch.no_grad():
                    if start > 0:
                        rows = full[:, start - first : start - first + length]
                        own = torch.log_softmax(rows, dim=-1)
                        if own.shape[1] < length:
                            own = torch.nn.functional.pad(own, (0, 0, 0, length - own.shape[1]))
                        judge_lps.append(own)
                    else:  # nothing predicts the first move token; no position term
                        judge_lps.append(torch.zeros(n, length, logits.shape[-1], device=logits.device))
                lps_parts.append(lps.detach())
                scored_parts.append(mask)
                in_move_parts.append(batch.in_move)
                self.forward_sequences += n
                self.forward_tokens += batch.tokens
        mask_all = _pad_cat(scored_parts)
        scores = JudgeScores(_pad_cat(lps_parts) * mask_all, mask_all, _pad_cat(in_move_parts), inst.sign)
        return TaylorResult(
            moves=moves,
            scores=scores,
            grad=torch.cat(grads) if with_grad else None,
            judge_logprobs=torch.cat(judge_lps),
            embedding=self.embedding.detach(),
            move_scored=inst.score_move,
            valid=content_mask(inst, moves),
            sign=inst.sign,
        )

    def _check_moves(self, inst: GameInstance, moves: torch.Tensor) -> torch.Tensor:
        moves = torch.as_tensor(moves, dtype=torch.long, device=self.device)
        if moves.dim() == 1:
            moves = moves.unsqueeze(0)
        if moves.dim() != 2 or moves.shape[1] != inst.move_length or moves.shape[0] == 0:
            raise ConfigError(f"moves must be [N, {inst.move_length}] token ids; got shape {tuple(moves.shape)}")
        vocab = self.embedding.shape[0]
        if int(moves.min()) < 0 or int(moves.max()) >= vocab:
            raise ConfigError(f"move token ids must lie in [0, {vocab}); got {int(moves.min())}..{int(moves.max())}")
        if inst.stop_id is not None and bool((content_lengths(inst, moves) < 1).any()):
            raise ConfigError("moves: a move has at least one content token before its stop token")
        return moves
