"""`frost bench`: per-phase timings of the core operations, with medians over repeats, written to BENCHMARKS.md."""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from frost.data import read_documents
from frost.frost import select_candidates
from frost.games import GameInstance, InfillingGame
from frost.judge import Judge
from frost.models import LoadedModel, forbidden_token_mask
from frost.sampling import cache_io, sample_moves


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


def bench_core(lm: LoadedModel, *, K: int = 8, L: int = 8, D: int = 64, repeats: int = 5) -> dict[str, Any]:
    """Time sampling, the judge passes, the Taylor grid + top-D and exact scoring on one story prompt."""
    model, tok = lm.model, lm.tokenizer
    vocab = model.get_input_embeddings().weight.shape[0]
    forbidden = forbidden_token_mask(tok, vocab, lm.device)
    instances, _ = InfillingGame(tok, move_length=L).instances(read_documents("handwritten"), warn=False)
    inst: GameInstance = instances[0]
    prompt = torch.tensor([inst.prompt_ids], device=lm.device)
    judge = Judge(model, batch_size=max(K, D))
    gen = torch.Generator(device=lm.device).manual_seed(0)
    sampled = sample_moves(model, inst.prompt_ids, K, L, forbidden=forbidden, generator=gen)
    moves = sampled.moves
    timings: list[Timing] = []
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
        sample_moves(model, inst.prompt_ids, K, L, forbidden=forbidden, generator=gen)

    def generate_k_copies() -> None:
        with torch.inference_mode():
            model.generate(
                input_ids=prompt,
                do_sample=True,
                num_return_sequences=K,
                max_new_tokens=L,
                min_new_tokens=L,
                pad_token_id=tok.pad_token_id,
            )

    def judge_forward() -> None:
        judge.rewards(inst, moves)

    def judge_forward_backward() -> None:
        judge.taylor(inst, moves)

    taylor = judge.taylor(inst, moves)

    def grid_top_d(rule: str) -> Callable[[], object]:
        return lambda: select_candidates(rule, taylor, sampled.logprobs, D, forbidden=forbidden)

    children = select_candidates("taylor", taylor, sampled.logprobs, D, forbidden=forbidden).children(moves)

    def exact_children() -> None:
        judge.rewards(inst, children)

    plen = prompt.shape[1]
    timings.append(time_it("prompt prefill", prefill, shape=f"1 x {plen}", repeats=repeats))
    timings.append(
        time_it("prefill + L batched decode steps", prefill_and_decode, shape=f"K={K}, L={L}", repeats=repeats)
    )
    timings.append(time_it("sample_moves (shared prefix)", sampling, shape=f"K={K}, L={L}", repeats=repeats))
    timings.append(
        time_it("generate(num_return_sequences=K)", generate_k_copies, shape=f"{K} x {plen}", repeats=repeats)
    )
    timings.append(time_it("judge forward", judge_forward, shape=f"{K} x {inst.judge_length}", repeats=repeats))
    timings.append(
        time_it("judge forward+backward", judge_forward_backward, shape=f"{K} x {inst.judge_length}", repeats=repeats)
    )
    for rule in ("taylor-gated", "full-gated", "taylor"):
        timings.append(
            time_it(f"grid + top-D ({rule})", grid_top_d(rule), shape=f"{K}x{L}x{vocab}, D={D}", repeats=repeats)
        )
    timings.append(
        time_it("exact scoring of D children", exact_children, shape=f"{D} x {inst.judge_length}", repeats=1)
    )
    by = {t.name: t.median_s for t in timings}
    # decode steps alone = sampling minus its prefill; the target compares sampling with prefill + L batched steps
    ratios = {
        "sampling_vs_prefill": by["sample_moves (shared prefix)"] / by["prompt prefill"],
        "sampling_vs_floor": by["sample_moves (shared prefix)"] / by["prefill + L batched decode steps"],
        "generate_vs_prefill": by["generate(num_return_sequences=K)"] / by["prompt prefill"],
        "generate_vs_sampling": by["generate(num_return_sequences=K)"] / by["sample_moves (shared prefix)"],
        "judge_fwd_bwd_vs_fwd": by["judge forward+backward"] / by["judge forward"],
    }
    return {
        "machine": machine_description(lm),
        "model": lm.name,
        "K": K,
        "L": L,
        "D": D,
        "timings": [asdict(t) for t in timings],
        "ratios": ratios,
    }


def machine_description(lm: LoadedModel) -> str:
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
    start, end = f"<!-- frost-bench:{section} -->", f"<!-- /frost-bench:{section} -->"
    block = f"{start}\n{body}\n{end}"
    text = (
        path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `frost bench`; edit outside the markers.\n"
    )
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def run_bench(lm: LoadedModel, *, out: Path, json_path: Path | None, **kwargs: Any) -> dict[str, Any]:
    """Run the core benchmark, update `out` (BENCHMARKS.md) and optionally write JSON."""
    result = bench_core(lm, **kwargs)
    write_section(out, "core", markdown(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1))
    return result


def bench_training(
    model: str = "embedded",
    *,
    arms: tuple[tuple[str, int], ...] = (("frost", 4), ("grpo", 8), ("grpo", 4)),
    batch_size: int = 4,
    steps: int = 3,
    rule: str = "taylor-gated",
) -> dict[str, Any]:
    """Median wall time of training steps per (algorithm, K), measured side by side in one process.

    Each arm trains a fresh LoRA on a fresh copy of the base model for `steps` steps after one warm-up step, on the
    hand-written stories, without validation or checkpoints.
    """
    import tempfile

    from frost.config import config_from_dict
    from frost.trainer import Trainer

    out: dict[str, Any] = {"arms": []}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm, k in arms:
            config = config_from_dict(
                {
                    "model": {"name": model},
                    "frost": {"rule": rule},
                    "optim": {"lr": 1e-4},
                    "data": {"source": "handwritten", "validation_size": 0},
                    "train": {
                        "algorithm": algorithm,
                        "K": k,
                        "batch_size": batch_size,
                        "steps": steps + 1,
                        "val_every": 0,
                        "checkpoint_every": 0,
                        "run_dir": f"{tmp}/{algorithm}-{k}",
                    },
                }
            )
            trainer = Trainer(config)
            records = [trainer.train_step() for _ in range(steps + 1)][1:]
            phases = ("time/step_s", "time/sample_s", "time/judge_s", "time/loss_s", "time/optim_s")
            out["arms"].append(
                {
                    "algorithm": algorithm,
                    "K": k,
                    "B": batch_size,
                    **{p: statistics.median(r[p] for r in records) for p in phases},
                    "min_step_s": min(r["time/step_s"] for r in records),
                    "max_step_s": max(r["time/step_s"] for r in records),
                    "judge_fwd_seqs": records[0]["judge_fwd_seqs"],
                    "judge_bwd_seqs": records[0]["judge_bwd_seqs"],
                    "steps_timed": steps,
                }
            )
    by = {(a["algorithm"], a["K"]): a["time/step_s"] for a in out["arms"]}
    ratios = {}
    if ("frost", 4) in by and ("grpo", 8) in by:
        ratios["frost_k4_vs_grpo_k8"] = by[("frost", 4)] / by[("grpo", 8)]
    if ("frost", 4) in by and ("grpo", 4) in by:
        ratios["frost_vs_grpo_same_k"] = by[("frost", 4)] / by[("grpo", 4)]
    out["ratios"] = ratios
    return out


def training_markdown(result: dict[str, Any]) -> str:
    """A BENCHMARKS.md section for `bench_training`'s result."""
    lines = [
        "| algorithm | K | B | step s (median) | min | max | sample s | judge + Frost s | loss s | optimizer s "
        "| judge fwd / bwd seqs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in result["arms"]:
        lines.append(
            f"| {a['algorithm']} | {a['K']} | {a['B']} | {a['time/step_s']:.1f} | {a['min_step_s']:.1f} "
            f"| {a['max_step_s']:.1f} | {a['time/sample_s']:.1f} | {a['time/judge_s']:.1f} | {a['time/loss_s']:.1f} "
            f"| {a['time/optim_s']:.2f} | {a['judge_fwd_seqs']} / {a['judge_bwd_seqs']} |"
        )
    r = result["ratios"]
    lines.append("")
    if "frost_k4_vs_grpo_k8" in r:
        lines.append(
            f"- Frost K=4 step / GRPO K=8 step (the canonical matched pair): {r['frost_k4_vs_grpo_k8']:.2f} "
            "(target <= 1)."
        )
    if "frost_vs_grpo_same_k" in r:
        lines.append(f"- Frost step / GRPO step at the same K=4: {r['frost_vs_grpo_same_k']:.2f} (target <= 1.3).")
    return "\n".join(lines)
