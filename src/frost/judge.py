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
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from frost.errors import ConfigError
from frost.games import GameInstance
from frost.judge_engine import Item, JudgeEngine
from frost.judge_engine import JudgeOutOfMemory as JudgeOutOfMemory  # raised by the judge's passes
from frost.models import no_grad
from frost.moves import content_mask
from frost.rules import estimating_rule

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

    def approx(self, rule: str = "taylor") -> torch.Tensor:
        """a(k, j, v) = R(y_k) + the rule's reward signals (T, and O for `full`; `judge-gated`: O alone) for every
        parent, position and token: [K, L, V] (materialises the whole grid; rows of slots without content are -inf).
        `rule`: a rule that estimates rewards (`frost.rules.estimating_rule`; the paper's is `taylor`)."""
        signals = estimating_rule(rule).signals
        k, length, v = self.shape
        rows = torch.arange(k * length, device=self.moves.device)
        grid = self.rows_gradient_term(rows) if "T" in signals else torch.zeros(k * length, v, device=self.moves.device)
        if "O" in signals:
            grid = grid + self.rows_own_term(rows)
        grid = grid.view(k, length, v) + self.rewards.view(k, 1, 1)
        return grid.masked_fill(~self.valid.unsqueeze(-1), float("-inf"))


class Judge(JudgeEngine):
    """A frozen causal LM that scores moves of a Cross-Entropy Game exactly, from token ids.

    `context` is entered around every judge pass; when the judge shares weights with a LoRA player it is the
    adapter-disabling context, so no second copy of the base model is needed.

    A pass takes at most `batch_size` sequences, and fewer when their float32 logits ([n, T, V]) would exceed
    `logits_bytes` (default: 128 MiB on the CPU, where the full-vocabulary softmax and its gradient are bound by
    memory traffic and smaller chunks run faster; 4 GiB on a GPU).
    """

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

    def score_many(self, items: list[Item]) -> list[JudgeScores]:
        """The judge's log-probabilities of every target token of each text's moves, all texts batched together
        (`batch_size` rows per forward, right-padded); identical moves of a text are scored once."""
        checked, uniques, rows = self._unique_rows(items)
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
        lengths = {inst.move_length for inst, _ in items}
        if len(lengths) != 1:
            raise ConfigError(f"taylor_many: every text needs one move length; got {sorted(lengths)}")
        length = lengths.pop()
        checked, uniques, rows = self._unique_rows(items)
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
