"""`frost bench`: per-phase timings of the core operations, with medians over repeats, written to BENCHMARKS.md."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from frost.decode import resolve_decode
from frost.games import GameInstance, build_game
from frost.judge import Judge, TaylorResult
from frost.models import LoadedModel, cache_io, forbidden_token_mask
from frost.proposal import select_candidates
from frost.run.data import read_documents
from frost.run.memplan import ModelShape
from frost.sampling import SampledMoves, sample_moves
from frost.tools.mdblock import write_block


@dataclass
class Timing:
    """Wall-clock seconds of one operation over repeats (after warm-up)."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    shape: str


def time_it(name: str, fn: Callable[[], object], *, shape: str, repeats: int = 5, warmup: int = 1) -> Timing:
    """Median, min and max wall time of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return Timing(name, statistics.median(times), min(times), max(times), repeats, shape)


@dataclass(frozen=True)
class _CoreInputs:
    """What `bench_core`'s timed operations share: the model, one story prompt, K sampled moves and their grid."""

    lm: LoadedModel
    inst: GameInstance
    prompt: torch.Tensor
    forbidden: torch.Tensor
    vocab: int
    judge: Judge
    generator: torch.Generator
    sampled: SampledMoves
    taylor: TaylorResult
    children: torch.Tensor
    K: int
    L: int
    D: int


def _core_inputs(lm: LoadedModel, *, K: int, L: int, D: int) -> _CoreInputs:
    """Build the story prompt, sample K moves of L tokens and compute their Taylor grid and the top-D children."""
    model, tok = lm.model, lm.tokenizer
    vocab = model.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(tok, vocab, lm.device)
    instances, _ = build_game("infilling", tok, {"move_length": L}).instances(read_documents("handwritten"), warn=False)
    inst: GameInstance = instances[0]
    prompt = torch.tensor([inst.prompt_ids], device=lm.device)
    judge = Judge(model, batch_size=max(K, D))
    gen = torch.Generator(device=lm.device).manual_seed(0)
    sampled = sample_moves(model, inst.prompt_ids, K, L, forbidden=forbidden, generator=gen)
    taylor = judge.taylor(inst, sampled.moves)
    children = select_candidates("taylor", taylor, sampled.logprobs, D, forbidden=forbidden).children(sampled.moves)
    return _CoreInputs(lm, inst, prompt, forbidden, vocab, judge, gen, sampled, taylor, children, K, L, D)


def _sampling_timings(c: _CoreInputs, repeats: int) -> list[Timing]:
    """Time a prompt prefill, its floor of L batched decode steps, our sampler and `generate` on K copies."""
    model, prompt, K, L = c.lm.model, c.prompt, c.K, c.L
    cache_kw, cache_attr = cache_io(model)

    def prefill() -> None:
        with torch.inference_mode():
            model(input_ids=prompt, use_cache=True, logits_to_keep=1)

    def prefill_and_decode() -> None:
        """The floor of sampling: one prefill, then L batched decode steps over K rows (greedy, no bookkeeping)."""
        with torch.inference_mode():
            out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            cache = getattr(out, cache_attr)
            cache.batch_repeat_interleave(K)
            token = out.logits[:, -1].argmax(-1, keepdim=True).expand(K, 1)
            for _ in range(L - 1):
                out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
                token = out.logits[:, -1].argmax(-1, keepdim=True)

    def sampling() -> None:
        sample_moves(model, c.inst.prompt_ids, K, L, forbidden=c.forbidden, generator=c.generator)

    def generate_k_copies() -> None:
        with torch.inference_mode():
            model.generate(
                input_ids=prompt,
                do_sample=True,
                num_return_sequences=K,
                max_new_tokens=L,
                min_new_tokens=L,
                pad_token_id=c.lm.tokenizer.pad_token_id,
            )

    plen = prompt.shape[1]
    return [
        time_it("prompt prefill", prefill, shape=f"1 x {plen}", repeats=repeats),
        time_it("prefill + L batched decode steps", prefill_and_decode, shape=f"K={K}, L={L}", repeats=repeats),
        time_it("sample_moves (shared prefix)", sampling, shape=f"K={K}, L={L}", repeats=repeats),
        time_it("generate(num_return_sequences=K)", generate_k_copies, shape=f"{K} x {plen}", repeats=repeats),
    ]


def _judge_timings(c: _CoreInputs, repeats: int) -> list[Timing]:
    """Time the judge's forward and forward+backward, the Taylor grid + top-D per rule and exact scoring of D
    children."""
    judge, inst, moves, D = c.judge, c.inst, c.sampled.moves, c.D
    judged = f"{c.K} x {inst.max_judge_length}"

    def grid_top_d(rule: str) -> Callable[[], object]:
        return lambda: select_candidates(rule, c.taylor, c.sampled.logprobs, D, forbidden=c.forbidden)

    timings = [
        time_it("judge forward", lambda: judge.rewards(inst, moves), shape=judged, repeats=repeats),
        time_it("judge forward+backward", lambda: judge.taylor(inst, moves), shape=judged, repeats=repeats),
    ]
    grid = f"{c.K}x{c.L}x{c.vocab}, D={D}"
    for rule in ("taylor-gated", "full-gated", "taylor"):
        timings.append(time_it(f"grid + top-D ({rule})", grid_top_d(rule), shape=grid, repeats=repeats))
    exact = f"{D} x {inst.max_judge_length}"
    timings.append(
        time_it("exact scoring of D children", lambda: judge.rewards(inst, c.children), shape=exact, repeats=1)
    )
    return timings


def _core_ratios(timings: Sequence[Timing]) -> dict[str, float]:
    """Ratios of median times: sampling against a prefill and its floor, `generate` against both, backward cost."""
    by = {t.name: t.median_s for t in timings}
    # decode steps alone = sampling minus its prefill; the target compares sampling with prefill + L batched steps
    return {
        "sampling_vs_prefill": by["sample_moves (shared prefix)"] / by["prompt prefill"],
        "sampling_vs_floor": by["sample_moves (shared prefix)"] / by["prefill + L batched decode steps"],
        "generate_vs_prefill": by["generate(num_return_sequences=K)"] / by["prompt prefill"],
        "generate_vs_sampling": by["generate(num_return_sequences=K)"] / by["sample_moves (shared prefix)"],
        "judge_fwd_bwd_vs_fwd": by["judge forward+backward"] / by["judge forward"],
    }


def bench_core(lm: LoadedModel, *, K: int = 8, L: int = 8, D: int = 64, repeats: int = 5) -> dict[str, Any]:
    """Time sampling, the judge passes, the Taylor grid + top-D and exact scoring on one story prompt."""
    inputs = _core_inputs(lm, K=K, L=L, D=D)
    timings = _sampling_timings(inputs, repeats) + _judge_timings(inputs, repeats)
    return {
        "machine": machine_description(lm),
        "model": lm.name,
        "K": K,
        "L": L,
        "D": D,
        "timings": [asdict(t) for t in timings],
        "ratios": _core_ratios(timings),
    }


def machine_description(lm: LoadedModel) -> str:
    """The device in words: the GPU's name and dtype, or the CPU's architecture, threads, dtype and torch version."""
    if lm.device.type == "cuda":
        return f"{torch.cuda.get_device_name(lm.device)}, {lm.dtype}".replace("torch.", "")
    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads, {lm.dtype}, torch {torch.__version__}".replace(
            "torch.float", "float"
        )
    )


def markdown(result: dict[str, Any]) -> str:
    """A BENCHMARKS.md section for `bench_core`'s result."""
    lines = [
        f"Machine: {result['machine']}; model: {result['model']}; K={result['K']}, L={result['L']}, D={result['D']}.",
        "",
        "| operation | shape | median ms | min ms | max ms | repeats |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for t in result["timings"]:
        lines.append(
            f"| {t['name']} | {t['shape']} | {t['median_s'] * 1e3:,.0f} | {t['min_s'] * 1e3:,.0f} | "
            f"{t['max_s'] * 1e3:,.0f} | {t['repeats']} |"
        )
    r = result["ratios"]
    grid = [t for t in result["timings"] if t["name"].startswith("grid + top-D")]
    lines += [
        "",
        f"- sampling K={result['K']}, L={result['L']} costs {r['sampling_vs_floor']:.2f}x one prompt prefill plus "
        f"{result['L']} batched decode steps (target <= 2x) and {r['sampling_vs_prefill']:.2f}x one prompt prefill "
        f"(`generate(num_return_sequences={result['K']})`: {r['generate_vs_prefill']:.2f}x, "
        f"{r['generate_vs_sampling']:.2f}x our sampler).",
        f"- judge forward+backward costs {r['judge_fwd_bwd_vs_fwd']:.2f}x a forward alone (target <= 2.6x).",
        "- Taylor grid + gate + global top-D: "
        + ", ".join(f"{t['name'][len('grid + top-D ') :]} {t['median_s'] * 1e3:.0f} ms" for t in grid)
        + " (target <= 60 ms).",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, body: str) -> None:
    """Replace (or append) the `<!-- frost-bench:SECTION -->` block of a Markdown file."""
    write_block(
        path,
        "frost-bench",
        section,
        body,
        new_file="# Benchmarks\n\nWritten by `frost bench`; edit outside the markers.\n",
    )


def run_bench(lm: LoadedModel, *, out: Path, json_path: Path | None, **kwargs: Any) -> dict[str, Any]:
    """Run the core benchmark, update `out` (BENCHMARKS.md) and optionally write JSON."""
    result = bench_core(lm, **kwargs)
    write_section(out, "core", markdown(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------------------- training steps


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, *, n: int = 2048, repeats: int = 5) -> float:
    """The machine's measured dense matmul rate (FLOP/s): median over `repeats` of an n x n x n product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = time_it("matmul", lambda: torch.mm(a, b), shape=f"{n}^3", repeats=repeats)
    return 2 * n**3 / timing.median_s


def forward_flops(shape: ModelShape, tokens: float, context: float, logit_positions: float) -> float:
    """Forward FLOPs of a decoder over `tokens` tokens attending to `context` positions on average, with the LM
    head applied at `logit_positions` positions (2 FLOPs per multiply-add)."""
    per_token = 2 * sum(a * b for a, b in shape.linear_shapes().values()) * shape.num_hidden_layers
    attention = 4 * shape.num_hidden_layers * context * shape.q_dim
    return tokens * (per_token + attention) + logit_positions * 2 * shape.hidden_size * shape.vocab_size


def step_flops(
    shape: ModelShape,
    *,
    B: int,
    K: int,
    L: int,
    prompt: int,
    judge_len: int,
    judge_fwd: float,
    judge_bwd: float,
    updates: int = 1,
    player_rereads: float = 0,
) -> float:
    """Estimated FLOPs of one training step from the model's shape: sampling (prompt prefill, K*L decode tokens),
    per update the player's loss (forward, a backward of about one forward since the base weights take no gradient)
    and the reference forward, the judge forwards (every sequence) and backwards (about one forward each), and the
    player forwards over prompt + move that later Frost rounds run for the gate (`player_rereads` sequences)."""
    player = forward_flops(shape, B * (prompt + K * L), prompt + L / 2, B * K * L)
    judge = forward_flops(shape, judge_len, judge_len / 2, judge_len)
    reread = forward_flops(shape, prompt + L, (prompt + L) / 2, L)
    return (1 + 3 * updates) * player + (judge_fwd + judge_bwd) * judge + player_rereads * reread


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since the last reset: allocated tensors on GPU, the resident set size (VmHWM) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass(frozen=True)
class BenchArm:
    """One way of taking a training step: the algorithm, its group size and rule, and whether it runs the naive
    (the authors' demo) path."""

    algorithm: str
    K: int
    rule: str = "taylor-gated"
    naive: bool = False
    rounds: int = 1
    """Frost rounds per step (`frost.rounds`)."""
    epochs: int = 1
    """Updates per batch (`train.epochs`); above 1 the loss is ppo-clip."""

    @property
    def label(self) -> str:
        """The arm's name in tables: the algorithm and the settings that differ from a plain step."""
        extra = (f" rounds={self.rounds}" if self.rounds > 1 else "") + (
            f" ppo-clip epochs={self.epochs}" if self.epochs > 1 else ""
        )
        if self.algorithm == "grpo":
            return f"GRPO K={self.K}{extra}"
        return f"Frost K={self.K} {self.rule}{extra}" + (" (naive path)" if self.naive else "")

    def sections(self) -> dict[str, dict[str, Any]]:
        """The config values this arm sets beyond the algorithm, K and rule."""
        out: dict[str, dict[str, Any]] = {"frost": {"rounds": self.rounds}, "train": {"epochs": self.epochs}}
        if self.epochs > 1:
            out["train"]["loss"] = "ppo-clip"
        return out


class _SlotMask:
    """A `generate` logits processor that applies a move's per-slot sampling mask [L, V]."""

    def __init__(self, masks: torch.Tensor, prompt_length: int) -> None:
        self.masks, self.prompt_length = masks, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        slot = min(input_ids.shape[1] - self.prompt_length, self.masks.shape[0] - 1)
        return scores.masked_fill(self.masks[slot], float("-inf"))


def generate_sampler(
    player: Any,
    insts: Sequence[GameInstance],
    k: int,
    masks: Sequence[Any],
    temperature: float,
    generator: torch.Generator | None,
) -> list[Any]:
    """The authors' demo's way to sample: one text at a time, `generate` on K copies of the prompt, then a second
    player pass over the K full sequences for the distributions the gate needs (`frost.step.Sampler`)."""
    return [_generate_group(player, i, k, m, temperature) for i, m in zip(insts, masks, strict=True)]


def _generate_group(player: Any, inst: GameInstance, k: int, masks: Any, temperature: float) -> Any:
    from transformers import LogitsProcessorList

    from frost.sampling import SampledMoves, player_logprobs

    device = player.get_input_embeddings().weight.device
    prompt = torch.tensor([inst.prompt_ids], device=device).repeat(k, 1)
    stop = inst.stop_id
    with torch.inference_mode():
        out = player.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=inst.move_length,
            logits_processor=LogitsProcessorList([_SlotMask(masks.sampling.to(device), prompt.shape[1])]),
            eos_token_id=stop,
            pad_token_id=stop if stop is not None else 0,
        )
    moves = out[:, prompt.shape[1] :]
    if moves.shape[1] < inst.move_length:  # every row stopped early: pad with the stop token
        pad = torch.full((k, inst.move_length - moves.shape[1]), stop or 0, dtype=moves.dtype, device=device)
        moves = torch.cat([moves, pad], dim=1)
    moves = moves.clone()
    dists = player_logprobs(player, inst.prompt_ids, moves, temperature=temperature, forbidden=masks.sampling)
    return SampledMoves(moves=moves, logprobs=dists)


def use_naive_path(trainer: Any) -> None:
    """Switch a trainer to the naive (the authors' demo's) path: one text at a time in every phase, `generate` on K
    prompt copies and a second player pass for the gate (`generate_sampler`), the judge one whole sequence per
    forward (parents and children, no prefix cache), and the loss over K full prompt+move sequences. Everything else
    is the trainer's own step."""
    import dataclasses as dc

    from frost.judge import Judge

    trainer.sampler = generate_sampler
    trainer.judge = Judge(trainer.player, batch_size=1, context=trainer.player.disable_adapter, prefix_cache=False)
    trainer.settings = dc.replace(trainer.settings, shared_prompt=False, text_batch=1)


def default_arms(k: int, rules: Sequence[str] = ("taylor-gated", "judge-gated"), naive: bool = True) -> list[BenchArm]:
    """Frost at K (each rule), GRPO at K and at 2K, and the naive path of Frost at K with the first rule."""
    arms = [BenchArm("frost", k, r) for r in rules] + [BenchArm("grpo", k), BenchArm("grpo", 2 * k)]
    if naive:
        arms.append(BenchArm("frost", k, rules[0], naive=True))
    return arms


def option_arms(k: int, rules: Sequence[str] = ("taylor-gated", "judge-gated"), D: int | None = None) -> list[BenchArm]:
    """The step cost of the training options: GRPO at 2K with 1 and 2 ppo-clip updates, and each Frost rule at K
    with 1, 2 and 3 rounds (D fixed by the caller's `frost.D`) and with 2 ppo-clip updates."""
    arms = [BenchArm("grpo", 2 * k), BenchArm("grpo", 2 * k, epochs=2)]
    for rule in rules:
        arms += [BenchArm("frost", k, rule, rounds=r) for r in (1, 2, 3)] + [BenchArm("frost", k, rule, epochs=2)]
    return arms


@dataclass(frozen=True)
class _TrainingBench:
    """The settings every arm of `bench_training` shares."""

    model: str
    device: str
    dtype: str
    where: str
    """This rank's device (`frost.run.distributed.rank_device`)."""
    random_weights: bool
    fsdp_shards: int
    game: str
    game_params: dict[str, Any] | None
    L: int
    batch_size: int
    steps: int
    overrides: dict[str, dict[str, Any]] | None


@dataclass(frozen=True)
class _ArmRun:
    """What one arm's timed steps measured, kept after its trainer is gone."""

    records: list[dict[str, Any]]
    """The metrics of each timed step."""
    peak_memory_bytes: int
    decode: str
    prompt_tokens: int
    judge_tokens: int
    micro_batch: int

    def judge_seqs_mean(self, kind: str) -> float:
        """The mean over the timed steps of `judge_{kind}_seqs` (`fwd` or `bwd`)."""
        return statistics.fmean(r[f"judge_{kind}_seqs"] for r in self.records)


def _host_base(bench: _TrainingBench) -> LoadedModel:
    """A fresh base in host memory for an arm to shard onto the device (a sharded base takes one adapter)."""
    from frost.models import load_model, resolve_device, resolve_dtype

    at = resolve_device(bench.where)
    loaded = load_model(
        bench.model, device="cpu", dtype=resolve_dtype(bench.dtype, at), random_weights=bench.random_weights
    )
    return dataclasses.replace(loaded, device=at)


def _arm_sections(bench: _TrainingBench, arm: BenchArm, run_dir: str) -> dict[str, dict[str, Any]]:
    """The config sections of one arm's run: `steps` + 1 steps on the hand-written stories, no validation or
    checkpoints, then the caller's overrides."""
    sections: dict[str, dict[str, Any]] = {
        "model": {
            "name": bench.model,
            "device": bench.device,
            "dtype": bench.dtype,
            "random_weights": bench.random_weights,
            "fsdp_shards": bench.fsdp_shards,
        },
        "game": {"kind": bench.game, "move_length": bench.L, **(bench.game_params or {})},
        "frost": {"rule": arm.rule, **arm.sections()["frost"]},
        "optim": {"lr": 1e-4},
        "data": {"source": "handwritten", "validation_size": 0},
        "train": {
            "algorithm": arm.algorithm,
            "K": arm.K,
            "batch_size": bench.batch_size,
            "steps": bench.steps + 1,
            **arm.sections()["train"],
            "val_every": 0,
            "checkpoint_every": 0,
            "run_dir": run_dir,
        },
    }
    for key, values in (bench.overrides or {}).items():
        sections[key] = {**sections.get(key, {}), **values}
    return sections


def _timed_steps(
    step: Callable[[], dict[str, Any]], steps: int, device: torch.device
) -> tuple[list[dict[str, Any]], int]:
    """One warm-up step, then `steps` timed steps: their metrics and the peak memory over them."""
    step()  # warm-up
    _reset_peak_memory(device)
    records = [step() for _ in range(steps)]
    return records, peak_memory_bytes(device)


def _run_arm(bench: _TrainingBench, arm: BenchArm, base: LoadedModel, run_dir: str) -> tuple[_ArmRun, LoadedModel]:
    """Train a fresh LoRA on `base` for one arm and measure its steps; returns the measurements and the base for
    the next arm (this one's without its LoRA, or a fresh host base when sharded), the arm's trainer freed."""
    from frost.config import config_from_dict
    from frost.run.trainer import Trainer

    trainer = Trainer(config_from_dict(_arm_sections(bench, arm, run_dir)), base=base)
    if arm.naive:
        use_naive_path(trainer)
    records, peak = _timed_steps(trainer.train_step, bench.steps, base.device)
    inst = trainer.train_set[0]
    run = _ArmRun(
        records=records,
        peak_memory_bytes=peak,
        decode=resolve_decode(trainer.config.model.decode, trainer.player, base.device),
        prompt_tokens=len(inst.prompt_ids),
        judge_tokens=inst.max_judge_length,
        micro_batch=trainer.settings.text_batch,
    )
    if bench.fsdp_shards == 1:
        base = dataclasses.replace(base, model=trainer.player.unload())  # the base without this arm's LoRA
    del trainer
    gc.collect()  # the arm's adapter, optimizer and kept decode caches go now, not at some later collection
    if bench.fsdp_shards > 1:
        base = _host_base(bench)
    return run, base


def _arm_step_flops(bench: _TrainingBench, arm: BenchArm, run: _ArmRun, shape: ModelShape) -> float:
    """The estimated FLOPs of one of the arm's steps, from the sequences each pass ran on average."""
    sampled_and_loss = bench.batch_size * arm.K * (1 + 2 * arm.epochs)
    rereads = statistics.fmean(r["player_fwd_seqs"] - sampled_and_loss for r in run.records)
    return step_flops(
        shape, B=bench.batch_size, K=arm.K, L=bench.L, prompt=run.prompt_tokens, judge_len=run.judge_tokens,
        judge_fwd=run.judge_seqs_mean("fwd"), judge_bwd=run.judge_seqs_mean("bwd"), updates=arm.epochs,
        player_rereads=rereads,
    )  # fmt: skip


def _arm_row(
    bench: _TrainingBench, arm: BenchArm, run: _ArmRun, flops: float, total_peak_flops: float
) -> dict[str, Any]:
    """One arm's row of `bench_training`'s result: medians of the phases and step time, throughput, memory and FLOPs
    (`total_peak_flops`: the matmul peak over every rank)."""
    from frost.run.metrics import PHASES

    records = run.records
    step_s = [r["time/step_s"] for r in records]
    median = statistics.median(step_s)
    return {
        "label": arm.label,
        "algorithm": arm.algorithm,
        "K": arm.K,
        "rule": arm.rule if arm.algorithm == "frost" else None,
        "naive": arm.naive,
        "rounds": arm.rounds,
        "epochs": arm.epochs,
        "B": bench.batch_size,
        "L": bench.L,
        **{p: statistics.median(r[p] for r in records) for p in PHASES},
        "time/step_s": median,
        "min_step_s": min(step_s),
        "max_step_s": max(step_s),
        "tokens_per_s": statistics.median(r["tokens"] / r["time/step_s"] for r in records),
        "prompt_tokens": run.prompt_tokens,
        "judge_tokens": run.judge_tokens,
        "micro_batch": run.micro_batch,
        "decode": run.decode,
        "judge_fwd_seqs": records[0]["judge_fwd_seqs"],
        "judge_bwd_seqs": records[0]["judge_bwd_seqs"],
        "judge_fwd_seqs_mean": run.judge_seqs_mean("fwd"),
        "judge_bwd_seqs_mean": run.judge_seqs_mean("bwd"),
        "peak_memory_bytes": run.peak_memory_bytes,
        "step_flops": flops,
        "achieved_flops": flops / median,
        "frac_of_matmul_peak": flops / median / total_peak_flops,
    }


def _training_header(bench: _TrainingBench, base: LoadedModel, peak_flops: float, world_size: int) -> dict[str, Any]:
    """`bench_training`'s result before any arm: the machine, model and step shape, with an empty list of arms."""
    return {
        "machine": machine_description(base),
        "model": base.name,
        "game": bench.game,
        "L": bench.L,
        "B": bench.batch_size,
        "steps_timed": bench.steps,
        "matmul_peak_flops": peak_flops,
        "world_size": world_size,
        "fsdp_shards": bench.fsdp_shards,
        "arms": [],
    }


def bench_training(
    model: str = "embedded",
    *,
    K: int = 4,
    L: int = 8,
    batch_size: int = 4,
    steps: int = 5,
    arms: Sequence[BenchArm] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    base: LoadedModel | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    game: str = "infilling",
    game_params: dict[str, Any] | None = None,
    random_weights: bool = False,
    fsdp_shards: int = 1,
) -> dict[str, Any]:
    """Per-phase wall time of training steps per arm, measured side by side in one process on one copy of the base
    model: the median and spread over `steps` timed steps after one warm-up step, tokens per second, peak memory,
    the step's estimated FLOPs and the achieved rate against the measured matmul peak.

    Every arm trains a fresh LoRA (the same seed) for `steps` + 1 steps on the hand-written stories, without
    validation or checkpoints. `base` reuses an already loaded model; `overrides` updates config sections (tests).

    Under torchrun the B texts of each step are sharded across the ranks as in training: step times and phases
    are rank 0's, tokens and FLOPs are the whole step's, and the matmul peak is one device's times the world size.
    `fsdp_shards` > 1 shards the base's layers over groups of that many ranks (`frost.run.fsdp`), a fresh base per arm
    (built or loaded again: a sharded base takes one adapter); the ranks of a group do the same work, which the
    fraction of the matmul peak (over every rank) shows.
    """
    import tempfile

    from frost.models import load_model
    from frost.run import distributed

    arms = list(arms) if arms is not None else default_arms(K)
    world = distributed.init_world(device, shard_size=fsdp_shards)
    where = distributed.rank_device(device, world)
    bench = _TrainingBench(
        model=model, device=device, dtype=dtype, where=where, random_weights=random_weights, fsdp_shards=fsdp_shards,
        game=game, game_params=game_params, L=L, batch_size=batch_size, steps=steps, overrides=overrides,
    )  # fmt: skip
    if fsdp_shards > 1:
        base = _host_base(bench)
    elif base is None:
        base = load_model(model, device=where, dtype=dtype, random_weights=random_weights)
    shape = ModelShape.from_config(base.model.config)
    peak_flops = matmul_peak_flops(base.device, base.dtype)
    out = _training_header(bench, base, peak_flops, world.size)
    with tempfile.TemporaryDirectory() as tmp:
        for n, arm in enumerate(arms):
            run, base = _run_arm(bench, arm, base, f"{tmp}/arm-{n}")
            flops = _arm_step_flops(bench, arm, run, shape)
            out["arms"].append(_arm_row(bench, arm, run, flops, peak_flops * world.size))
    out["ratios"] = training_ratios(out["arms"])
    return out


def training_ratios(arms: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Wall-time ratios of median step times: Frost at K vs GRPO at 2K (named `frost_k4_vs_grpo_k8` at K=4),
    Frost vs GRPO at the same K, and the naive path vs Frost; one entry per Frost rule, the first rule also under
    the plain names. Arms with more rounds or updates per step give `rounds{R}_vs_rounds1[RULE]` and
    `epochs{E}_vs_epochs1[LABEL]` against the same arm at one round and one update."""
    ratios = option_ratios(arms)
    arms = [a for a in arms if a.get("rounds", 1) == 1 and a.get("epochs", 1) == 1]
    by = {(a["algorithm"], a["K"], a["rule"], a["naive"]): a["time/step_s"] for a in arms}
    frost = [a for a in arms if a["algorithm"] == "frost" and not a["naive"]]
    for i, a in enumerate(frost):
        k, rule, t = a["K"], a["rule"], a["time/step_s"]
        names: dict[str, float] = {}
        if ("grpo", 2 * k, None, False) in by:
            names[f"frost_k{k}_vs_grpo_k{2 * k}"] = t / by[("grpo", 2 * k, None, False)]
        if ("grpo", k, None, False) in by:
            names["frost_vs_grpo_same_k"] = t / by[("grpo", k, None, False)]
        if ("frost", k, rule, True) in by:
            names["naive_vs_frost"] = by[("frost", k, rule, True)] / t
        for name, value in names.items():
            ratios[f"{name}[{rule}]"] = value
            if i == 0:
                ratios[name] = value
    return ratios


def option_ratios(arms: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Step time of each arm with R > 1 rounds or E > 1 updates over the same arm with one of each."""
    plain = {
        (a["algorithm"], a["K"], a["rule"], a["naive"]): a["time/step_s"]
        for a in arms
        if a.get("rounds", 1) == 1 and a.get("epochs", 1) == 1
    }
    ratios: dict[str, float] = {}
    for a in arms:
        base = plain.get((a["algorithm"], a["K"], a["rule"], a["naive"]))
        if base is None:
            continue
        name = a["rule"] if a["algorithm"] == "frost" else f"grpo-k{a['K']}"
        if a.get("rounds", 1) > 1:
            ratios[f"rounds{a['rounds']}_vs_rounds1[{name}]"] = a["time/step_s"] / base
        if a.get("epochs", 1) > 1:
            ratios[f"epochs{a['epochs']}_vs_epochs1[{name}]"] = a["time/step_s"] / base
    return ratios


def training_markdown(result: dict[str, Any]) -> str:
    """A BENCHMARKS.md section for `bench_training`'s result."""
    gib = 2**30
    lines = [
        f"Machine: {result['machine']}"
        + (f" x {result['world_size']} ranks" if result.get("world_size", 1) > 1 else "")
        + f"; model: {result['model']}; game: {result.get('game', 'infilling')}; "
        f"B={result['B']}, L={result['L']}; median of "
        f"{result['steps_timed']} timed steps after one warm-up (min-max in brackets); measured matmul peak "
        f"{result['matmul_peak_flops'] / 1e9:,.0f} GFLOP/s.",
        "",
        "| arm | step s | sample | judge pass | select | children | policy fwd+bwd | reference | optim "
        "| judge fwd/bwd seqs | tokens/s | peak mem GiB | GFLOP/step | % of matmul peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for a in result["arms"]:
        lines.append(
            f"| {a['label']} | {a['time/step_s']:.1f} [{a['min_step_s']:.1f}-{a['max_step_s']:.1f}] "
            f"| {a['time/sample_s']:.2f} | {a['time/judge_pass_s']:.2f} | {a['time/select_s']:.2f} "
            f"| {a['time/children_s']:.2f} | {a['time/policy_s']:.2f} | {a['time/reference_s']:.2f} "
            f"| {a['time/optim_s']:.2f} | {_seqs(a)} | {a['tokens_per_s']:,.0f} "
            f"| {a['peak_memory_bytes'] / gib:.2f} | {a['step_flops'] / 1e9:,.0f} "
            f"| {100 * a['frac_of_matmul_peak']:.0f}% |"
        )
    lines.append("")
    for name, value in result["ratios"].items():
        if "[" in name:
            lines.append(f"- `{name}` = {value:.2f}")
    return "\n".join(lines)


def _seqs(arm: dict[str, Any]) -> str:
    """Judge forward / backward sequences of a step: the first timed step's, or the mean over the timed steps when
    they vary (Frost rounds stop early on texts whose round replaced nothing)."""
    fwd = arm.get("judge_fwd_seqs_mean", arm["judge_fwd_seqs"])
    bwd = arm.get("judge_bwd_seqs_mean", arm["judge_bwd_seqs"])
    if fwd == arm["judge_fwd_seqs"] and bwd == arm["judge_bwd_seqs"]:
        return f"{arm['judge_fwd_seqs']} / {arm['judge_bwd_seqs']}"
    return f"{fwd:.1f} / {bwd:.1f} (mean)"
