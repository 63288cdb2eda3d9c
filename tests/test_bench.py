"""`frost bench`: the FLOP model against torch's counter, the step bench on a tiny model (every arm, the naive path),
the ratios and the Markdown."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import make_tiny_llama
from frost.models import LoadedModel
from frost.run.memplan import ModelShape
from frost.tools.bench import (
    BenchArm,
    bench_training,
    default_arms,
    forward_flops,
    option_arms,
    peak_memory_bytes,
    step_flops,
    training_markdown,
    training_ratios,
)


def test_forward_flops_match_torch_flop_counter():
    model = make_tiny_llama(vocab=211)
    model.config._attn_implementation = "eager"  # plain matmuls, which the counter sees
    tokens = 24
    ids = torch.randint(3, 211, (1, tokens))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids)
    shape = ModelShape.from_config(model.config)
    # the attention term counts every (query, key) pair of the full square, as the eager kernel computes it
    estimate = forward_flops(shape, tokens, context=tokens, logit_positions=tokens)
    assert estimate == pytest.approx(counter.get_total_flops(), rel=1e-6)


def test_training_ratios_are_ratios_of_medians():
    def arm(algorithm, k, step_s, rule=None, naive=False):
        return {"algorithm": algorithm, "K": k, "rule": rule, "naive": naive, "time/step_s": step_s}

    arms = [
        arm("frost", 4, 20.0, "taylor-gated"),
        arm("frost", 4, 16.0, "judge-gated"),
        arm("grpo", 4, 10.0),
        arm("grpo", 8, 25.0),
        arm("frost", 4, 60.0, "taylor-gated", naive=True),
    ]
    r = training_ratios(arms)
    assert r["frost_k4_vs_grpo_k8"] == pytest.approx(0.8)
    assert r["frost_vs_grpo_same_k"] == pytest.approx(2.0)
    assert r["naive_vs_frost"] == pytest.approx(3.0)
    assert r["frost_k4_vs_grpo_k8[judge-gated]"] == pytest.approx(16 / 25)
    assert "naive_vs_frost[judge-gated]" not in r


def test_step_bench_times_every_arm_on_a_tiny_model(embedded_tokenizer):
    model = make_tiny_llama(vocab=len(embedded_tokenizer), seed=3)
    base = LoadedModel(model, embedded_tokenizer, "tiny", torch.device("cpu"), torch.float32)
    arms = default_arms(2, ("taylor-gated", "judge-gated"))
    assert [a.label for a in arms] == [
        "Frost K=2 taylor-gated", "Frost K=2 judge-gated", "GRPO K=2", "GRPO K=4",
        "Frost K=2 taylor-gated (naive path)",
    ]  # fmt: skip
    result = bench_training(
        "tiny", K=2, L=3, batch_size=2, steps=2, arms=arms, base=base, overrides={"lora": {"rank": 4, "alpha": 8}}
    )
    assert [a["label"] for a in result["arms"]] == [a.label for a in arms]
    by = {a["label"]: a for a in result["arms"]}
    for a in result["arms"]:
        assert a["min_step_s"] <= a["time/step_s"] <= a["max_step_s"]
        parts = a["time/sample_s"] + a["time/judge_s"] + a["time/loss_s"] + a["time/optim_s"]
        assert parts <= a["time/step_s"] * 1.05
        assert a["tokens_per_s"] > 0 and a["step_flops"] > 0 and a["peak_memory_bytes"] > 0
    # judge accounting: GRPO scores K moves per text; gated Taylor Frost adds a backward over the parents and
    # children; judge-gated Frost needs no backward; the naive path does the same judge work one text at a time
    assert by["GRPO K=4"]["judge_fwd_seqs"] == 2 * 4 and by["GRPO K=4"]["judge_bwd_seqs"] == 0
    assert by["Frost K=2 taylor-gated"]["judge_bwd_seqs"] == 2 * 2
    assert by["Frost K=2 judge-gated"]["judge_bwd_seqs"] == 0
    assert by["Frost K=2 taylor-gated (naive path)"]["judge_bwd_seqs"] == 2 * 2
    assert {"frost_k2_vs_grpo_k4", "frost_vs_grpo_same_k", "naive_vs_frost"} <= set(result["ratios"])
    text = training_markdown(result)
    assert "| Frost K=2 taylor-gated (naive path) |" in text and "naive_vs_frost[taylor-gated]" in text
    # the base model left unchanged: no LoRA layers stay behind after the arms
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_peak_memory_is_positive():
    assert peak_memory_bytes(torch.device("cpu")) > 0


def test_arm_labels():
    assert BenchArm("grpo", 8).label == "GRPO K=8"
    assert BenchArm("frost", 4, "full-gated", naive=True).label == "Frost K=4 full-gated (naive path)"


def test_step_flops_count_each_update_and_each_player_reread():
    shape = ModelShape.from_config(make_tiny_llama(vocab=211).config)
    kw = {"B": 2, "K": 4, "L": 3, "prompt": 10, "judge_len": 20, "judge_fwd": 8, "judge_bwd": 4}
    player = forward_flops(shape, 2 * (10 + 4 * 3), 10 + 3 / 2, 2 * 4 * 3)
    one, two = step_flops(shape, **kw), step_flops(shape, **kw, updates=2)
    assert two - one == pytest.approx(3 * player)  # a policy forward, its backward and a reference forward
    reread = step_flops(shape, **kw, player_rereads=5) - one
    assert reread == pytest.approx(5 * forward_flops(shape, 13, 13 / 2, 3))


def test_option_arms_time_rounds_and_updates_on_a_tiny_model(embedded_tokenizer):
    model = make_tiny_llama(vocab=len(embedded_tokenizer), seed=3)
    base = LoadedModel(model, embedded_tokenizer, "tiny", torch.device("cpu"), torch.float32)
    arms = option_arms(2, ("judge-gated",))
    assert [a.label for a in arms] == [
        "GRPO K=4", "GRPO K=4 ppo-clip epochs=2", "Frost K=2 judge-gated", "Frost K=2 judge-gated rounds=2",
        "Frost K=2 judge-gated rounds=3", "Frost K=2 judge-gated ppo-clip epochs=2",
    ]  # fmt: skip
    result = bench_training(
        "tiny", K=2, L=3, batch_size=2, steps=2, arms=arms, base=base,
        overrides={"lora": {"rank": 4, "alpha": 8}, "frost": {"D": 2, "tau": 1e-3}},
    )  # fmt: skip
    by = {a["label"]: a for a in result["arms"]}
    assert by["GRPO K=4 ppo-clip epochs=2"]["judge_fwd_seqs"] == by["GRPO K=4"]["judge_fwd_seqs"]
    assert by["GRPO K=4 ppo-clip epochs=2"]["step_flops"] > by["GRPO K=4"]["step_flops"]
    assert by["Frost K=2 judge-gated rounds=3"]["judge_fwd_seqs_mean"] >= by["Frost K=2 judge-gated"]["judge_fwd_seqs"]
    r = result["ratios"]
    assert {"rounds2_vs_rounds1[judge-gated]", "rounds3_vs_rounds1[judge-gated]", "epochs2_vs_epochs1[judge-gated]",
            "epochs2_vs_epochs1[grpo-k4]"} <= set(r)  # fmt: skip
    plain = by["Frost K=2 judge-gated"]["time/step_s"]
    assert r["rounds2_vs_rounds1[judge-gated]"] == pytest.approx(
        by["Frost K=2 judge-gated rounds=2"]["time/step_s"] / plain
    )
    assert r["frost_k2_vs_grpo_k4"] == pytest.approx(plain / by["GRPO K=4"]["time/step_s"])  # plain arms only
