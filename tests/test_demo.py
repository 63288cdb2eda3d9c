"""The demo's comparison: statistics over seeds, the Markdown table and the figure, from metrics files."""

from __future__ import annotations

import json

import pytest

from frost.tools.demo import ARMS, ArmRun, markdown, summarize


def write_run(run_dir, best_by_step, step_s):
    run_dir.mkdir(parents=True)
    lines = []
    for step, best in best_by_step.items():
        lines.append({"step": step, "val/best_of_8": best, "val/reward_mean": best - 10, "val/token_entropy": 1.0,
                      "val/score_var": 4.0, "val/frac_zero_var": 0.0, "val/frac_copy_begin": 0.5})  # fmt: skip
        if step:
            lines.append({"step": step, "loss": 0.0, "time/step_s": step_s, "judge_fwd_seqs": 32, "judge_bwd_seqs": 0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_summary_and_table(tmp_path):
    runs = []
    for arm, _, label in ARMS:
        for seed, offset in ((0, 0.0), (1, 2.0)):
            run_dir = tmp_path / f"{arm}-{seed}"
            write_run(run_dir, {0: -100.0, 4: -90.0 + offset}, step_s=10.0 + seed)
            runs.append(ArmRun(arm, label, seed, run_dir))
    summary = summarize(runs)
    grpo = summary["grpo-k8"]
    assert grpo["seeds"] == [0, 1] and grpo["steps"] == [0, 4]
    assert grpo["final"]["best"] == pytest.approx({"mean": -89.0, "min": -90.0, "max": -88.0})
    assert grpo["step_s_median"] == pytest.approx(10.5)
    table = markdown(summary)
    assert all(label in table for _, _, label in ARMS)
    assert "-100.00 -> **-89.00** [-90.00, -88.00]" in table
