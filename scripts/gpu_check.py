"""The GPU check of issue "The paper's scale on one GPU": one command, nothing fetched, code from the checkout.

    PYTHONPATH=src python3 scripts/gpu_check.py --out results/gpu/check.json       # on the GPU machine
    PYTHONPATH=src python3 scripts/gpu_check.py --shape qwen3-tiny-shape --device cpu --steps 1 --quick   # here

1. Step times per phase, tokens/s, FLOP rate and peak memory against `frost.run.memplan`, for Frost K=4 (taylor-gated,
   judge-gated), GRPO K=4 and K=8, Frost K=8 (taylor-gated) and GRPO K=16, on a model built from its shape with
   random weights (default Qwen3-14B, bf16, LoRA r=alpha=256 on all seven projections, B=4, L=8), every arm on one
   loaded base (`frost.tools.bench.bench_training`).
2. TRL side by side (when `trl` and `datasets` import): TRL's GRPOTrainer on the same shape, K=8 and K=4, B, L,
   LoRA and beta (`scripts/trl_side_by_side.py`, in a child process so that its model has the GPU to itself),
   against Frost's GRPO steps.
3. Decoding: K=8 moves for each of B prompts on the same base with a LoRA adapter, eager against a static cache
   and against CUDA graphs (`frost.decode`): time per sampling call (median of 3 after a warm-up), the same moves
   and distributions, and whether the graph path ran or fell back.
4. Consistency of the CUDA path at a small shape (same random weights on both devices): fp32 on CUDA against the
   CPU (rewards, gradient cosine, top-16 candidates), and bf16 on CUDA against fp32 (gradient cosine, candidates).

Writes one JSON object (`--out`) and prints Markdown tables. Random weights: times and memory only, no results.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from frost.run.memplan import ModelShape, memory_plan
from frost.tools.bench import BenchArm, bench_training, training_markdown


def arms_for(quick: bool) -> list[BenchArm]:
    if quick:
        return [BenchArm("frost", 4, "taylor-gated"), BenchArm("grpo", 8)]
    return [
        BenchArm("frost", 4, "taylor-gated"),
        BenchArm("frost", 4, "judge-gated"),
        BenchArm("grpo", 4),
        BenchArm("grpo", 8),
        BenchArm("frost", 8, "taylor-gated"),
        BenchArm("grpo", 16),
    ]


def decode_check(args: argparse.Namespace, base: Any, k: int = 8) -> dict[str, Any]:
    """Sampling K moves after each of B prompts with each decode mode, on `base` with a LoRA adapter of the check's
    rank: seconds per call and agreement with the eager decode."""
    from peft import LoraConfig, get_peft_model

    from frost.decode import resolve_decode
    from frost.sampling import sample_moves_batch

    torch.manual_seed(0)
    player = get_peft_model(base.model, LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, init_lora_weights=False,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"]))  # fmt: skip
    player.eval()
    vocab = player.get_input_embeddings().weight.shape[0]
    prompts = [torch.randint(0, min(vocab, 49152), (170 + 3 * b,)).tolist() for b in range(args.B)]
    device = torch.device(args.device)
    modes = ["eager", "static"] + (["graphs"] if device.type == "cuda" else [])
    out: dict[str, Any] = {"K": k, "B": args.B, "L": args.L, "rows": k * args.B}
    first = None
    for mode in modes:

        def call(mode: str = mode) -> Any:
            gens = [torch.Generator(device=device).manual_seed(b) for b in range(args.B)]
            return sample_moves_batch(player, prompts, k, args.L, generator=gens, decode=mode)

        call()  # warm-up (and the capture)
        times, result = [], None
        for _ in range(3):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        entry: dict[str, Any] = {"s": statistics.median(times), "ran": resolve_decode(mode, player, device)}
        if first is None:
            first = result
        else:
            entry["same_moves"] = all(torch.equal(a.moves, b.moves) for a, b in zip(first, result, strict=True))
            entry["max_prob_diff"] = max(
                float((a.logprobs.exp() - b.logprobs.exp()).abs().max()) for a, b in zip(first, result, strict=True)
            )
        out[mode] = entry
    if "graphs" in out:
        out["eager_over_graphs"] = out["eager"]["s"] / out["graphs"]["s"]
    base.model = player.unload()
    return out


def step_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every arm on one random-weight base; each arm's peak memory next to its memory plan."""
    from frost.models import load_model

    t0 = time.perf_counter()
    base = load_model(args.shape, device=args.device, dtype=args.dtype, random_weights=True)
    load_s = time.perf_counter() - t0
    decode = decode_check(args, base) if not args.no_decode else None
    gc.collect()  # the check's adapter and kept decoders (with their graphs' memory) go before the step bench
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    overrides = {
        "lora": {"rank": args.lora_rank, "alpha": args.lora_rank},
        "model": {"judge_batch_size": args.judge_batch_size},
    }
    result = bench_training(
        args.shape, K=4, L=args.L, batch_size=args.B, steps=args.steps, arms=arms_for(args.quick), device=args.device,
        dtype=args.dtype, base=base, overrides=overrides, random_weights=True,
    )  # fmt: skip
    shape = ModelShape.from_config(base.model.config)
    dtype_bytes = torch.finfo(base.dtype).bits // 8
    for arm in result["arms"]:
        plan = memory_plan(
            shape, lora_rank=args.lora_rank, K=arm["K"], L=args.L, prompt_tokens=arm.get("prompt_tokens", 170),
            judge_tokens=arm.get("judge_tokens", 81), B=args.B, D=arm["K"], dtype_bytes=dtype_bytes,
            micro_batch=arm.get("micro_batch"), judge_batch_size=args.judge_batch_size,
            static_decode=arm.get("decode", "eager") != "eager",
        )  # fmt: skip
        arm["memplan_peak_bytes"] = plan.peak
        arm["peak_over_plan"] = arm["peak_memory_bytes"] / plan.peak if plan.peak else float("nan")
    result["load_s"] = load_s
    result["decode"] = decode
    result["shape"] = args.shape
    result["lora_rank"] = args.lora_rank
    return result


def _grad_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def consistency(args: argparse.Namespace) -> dict[str, Any]:
    """The same random small model on the CPU (fp32), on `args.device` in fp32 and in bf16: rewards, Taylor
    gradients and the top-16 candidates of the taylor rule on the same parents."""
    from frost.config import DataConfig
    from frost.games import build_game
    from frost.judge import Judge
    from frost.models import forbidden_token_mask, load_tokenizer
    from frost.moves import move_masks
    from frost.proposal import select_candidates
    from frost.run.data import load_split
    from frost.sampling import sample_moves
    from frost.shapes import random_model

    tokenizer = load_tokenizer("embedded")
    game = build_game("infilling", tokenizer, {"move_length": args.L})
    inst = load_split(DataConfig(source="handwritten", validation_size=0), game).train[0]
    runs: dict[str, dict[str, Any]] = {}
    parents = None
    for name, device, dtype in (
        ("cpu-fp32", "cpu", torch.float32),
        ("device-fp32", args.device, torch.float32),
        ("device-bf16", args.device, torch.bfloat16),
    ):
        model = random_model(args.consistency_shape, device, dtype, seed=1)
        model.eval().requires_grad_(False)
        vocab = model.get_input_embeddings().weight.shape[0]
        forbidden = forbidden_token_mask(tokenizer, vocab, device)
        masks = move_masks(inst, forbidden)
        if parents is None:
            parents = sample_moves(model, inst.prompt_ids, 8, args.L, forbidden=masks.sampling,
                                   generator=torch.Generator(device=device).manual_seed(0)).moves.cpu()  # fmt: skip
        judge = Judge(model)
        taylor = judge.taylor(inst, parents.to(device))
        cands = select_candidates("taylor", taylor, None, 16, forbidden=masks.content)
        runs[name] = {
            "rewards": taylor.rewards.float().cpu(),
            "grad": taylor.grad.float().cpu() if taylor.grad is not None else None,
            "candidates": set(zip(cands.parent.tolist(), cands.position.tolist(), cands.token.tolist(), strict=True)),
        }
        del model, judge, taylor
    out: dict[str, Any] = {"shape": args.consistency_shape}
    for a, b in (("device-fp32", "cpu-fp32"), ("device-bf16", "device-fp32")):
        ra, rb = runs[a], runs[b]
        out[f"{a}_vs_{b}"] = {
            "reward_max_abs_diff": float((ra["rewards"] - rb["rewards"]).abs().max()),
            "grad_cosine": _grad_cosine(ra["grad"], rb["grad"]),
            "top16_shared": len(ra["candidates"] & rb["candidates"]),
        }
    return out


def trl_side_by_side(args: argparse.Namespace, frost_steps: dict[str, Any]) -> dict[str, Any]:
    """TRL's GRPOTrainer step at K=8 and K=4 (child processes), and Frost's GRPO step over TRL's at each K."""
    if any(importlib.util.find_spec(m) is None for m in ("trl", "datasets")):
        return {"skipped": "trl or datasets is not installed"}
    out: dict[str, Any] = {}
    script = Path(__file__).with_name("trl_side_by_side.py")
    for k in (8, 4):
        path = args.out.with_name(f"trl-k{k}.json")
        cmd = [sys.executable, str(script), "--model", args.shape, "--random-weights", "--device", args.device,
               "--dtype", args.dtype, "--K", str(k), "--B", str(args.B), "--L", str(args.L),
               "--lora-rank", str(args.lora_rank), "--steps", str(args.steps), "--json", str(path)]  # fmt: skip
        if args.device == "cpu":
            cmd += ["--threads", str(torch.get_num_threads())]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.trl_timeout, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            out[f"k{k}"] = {"error": f"timed out after {args.trl_timeout} s"}
            continue
        if done.returncode != 0:
            out[f"k{k}"] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            continue
        trl = json.loads(path.read_text())
        ours = next((a for a in frost_steps["arms"] if a["algorithm"] == "grpo" and a["K"] == k), None)
        if ours is not None:
            trl["frost_grpo_step_s"] = ours["time/step_s"]
            trl["trl_over_frost"] = trl["step_s"] / ours["time/step_s"]
        out[f"k{k}"] = trl
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [training_markdown(result["steps"]), ""]
    lines.append("| arm | peak GiB | memplan GiB | peak / plan |")
    lines.append("|---|---:|---:|---:|")
    for arm in result["steps"]["arms"]:
        lines.append(
            f"| {arm['label']} | {arm['peak_memory_bytes'] / 2**30:.1f} | {arm['memplan_peak_bytes'] / 2**30:.1f} | "
            f"{arm['peak_over_plan']:.2f} |"
        )
    trl = {k: v for k, v in result.get("trl", {}).items() if isinstance(v, dict)}
    if trl:
        lines += ["", "| GRPO step at | TRL GRPOTrainer s | Frost s | TRL / Frost |", "|---|---:|---:|---:|"]
        for key, value in trl.items():
            if "error" in value:
                lines.append(f"| {key} | {value['error']} | | |")
            elif "trl_over_frost" in value:
                lines.append(
                    f"| {key.upper()} | {value['step_s']:.2f} | {value['frost_grpo_step_s']:.2f} "
                    f"| {value['trl_over_frost']:.2f} |"
                )
    decode = result["steps"].get("decode")
    if decode:
        lines += ["", f"| decode ({decode['rows']} rows, L={decode['L']}) | s per sampling call | ran | same moves "
                  "as eager | max prob diff |", "|---|---:|---|---|---:|"]  # fmt: skip
        for mode in ("eager", "static", "graphs"):
            if mode in decode:
                d = decode[mode]
                lines.append(f"| {mode} | {d['s']:.3f} | {d['ran']} | {d.get('same_moves', '-')} | "
                             f"{d.get('max_prob_diff', 0.0):.2e} |")  # fmt: skip
    if "consistency" in result:
        lines += ["", "| check | reward max abs diff | gradient cosine | top-16 shared |", "|---|---:|---:|---:|"]
        for key, value in result["consistency"].items():
            if isinstance(value, dict):
                lines.append(
                    f"| {key} | {value['reward_max_abs_diff']:.2e} | {value['grad_cosine']:.6f} | "
                    f"{value['top16_shared']}/16 |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="qwen3-14b-shape", help="the model's shape (frost.shapes) or a config.json")
    p.add_argument("--consistency-shape", default="qwen3-0.6b-shape", help="shape of the CUDA-vs-CPU checks")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--lora-rank", type=int, default=256, help="LoRA rank (alpha = rank)")
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per arm after one warm-up")
    p.add_argument("--judge-batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="two arms only (Frost K=4 taylor-gated, GRPO K=8)")
    p.add_argument("--no-consistency", action="store_true")
    p.add_argument("--no-decode", action="store_true", help="skip the eager / static / CUDA-graph decode check")
    p.add_argument("--no-trl", action="store_true", help="skip TRL's GRPOTrainer side by side")
    p.add_argument("--trl-timeout", type=int, default=240, help="seconds for each TRL run")
    p.add_argument("--out", type=Path, default=Path("results/gpu/check.json"))
    args = p.parse_args(argv)
    start = time.perf_counter()
    result: dict[str, Any] = {"device_name": _device_name(args.device), "argv": sys.argv[1:]}
    result["steps"] = step_bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))  # keep the step results if what follows fails
    if not args.no_trl:
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        result["trl"] = trl_side_by_side(args, result["steps"])
        args.out.write_text(json.dumps(result, indent=1, default=str))
    if not args.no_consistency:
        result["consistency"] = consistency(args)
    result["wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))
    print(f"\nmedian step s: {statistics.median(a['time/step_s'] for a in result['steps']['arms']):.2f}; "
          f"wall {result['wall_s']:.0f} s; written to {args.out}")  # fmt: skip
    return 0


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
