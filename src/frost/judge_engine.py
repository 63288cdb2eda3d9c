"""The judge's batching engine: move rows of several texts into right-padded batches (each text's prefix encoded once
into a KV cache where that saves tokens), passes of `rows_per_pass` rows agreed with an FSDP group, halved on
out-of-memory, and the rows' outputs regrouped per text. `frost.judge.Judge` adds the two scoring methods on top:
exact log-probabilities (`score_many`) and the one-backward Taylor pass (`taylor_many`)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from frost.agreement import ALONE, Agreement, fits
from frost.errors import ConfigError, FrostError
from frost.games import GameInstance
from frost.models import cache_io, causal_lm_logits, check_fits_context, lm_head_logits
from frost.moves import content_lengths
from frost.padding import PromptBatch

Row = tuple[int, GameInstance, list[int]]
"""One move to score: (its text's index, the text's instance, the move's token ids)."""


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


class JudgeEngine:
    """Batches, passes and out-of-memory back-off of a frozen causal LM scoring game moves (see `frost.judge.Judge`)."""

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
        """Where the judge's weights live (its input embedding's device)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the judge's weights (bf16 on a GPU by default)."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def embedding(self) -> torch.Tensor:
        """The input embedding matrix [V, H] the moves' tokens come from."""
        return self.model.get_input_embeddings().weight

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

    def _unique_rows(self, items: list[Item]) -> tuple[list[Item], list[tuple[torch.Tensor, torch.Tensor]], list[Row]]:
        """The checked moves of each text, their unique rows with the inverse index, and every unique row to run."""
        checked = [(inst, self._check_moves(inst, moves)) for inst, moves in items]
        uniques = [torch.unique(moves, dim=0, return_inverse=True) for _, moves in checked]
        rows = [(n, inst, m) for n, ((inst, _), (u, _)) in enumerate(zip(checked, uniques, strict=True)) for m in
                u.tolist()]  # fmt: skip
        return checked, uniques, rows

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
