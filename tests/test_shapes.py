"""Random-weight models built from a shape (timing and memory work), and the GPU check script run on the CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frost.cli import main
from frost.errors import ModelLoadError
from frost.models import forbidden_token_mask, load_model
from frost.run.memplan import ModelShape
from frost.shapes import SHAPES, shape_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_shape_builds_that_architecture_with_the_embedded_tokenizer():
    lm = load_model("qwen3-tiny-shape", device="cpu")
    config = lm.model.config
    assert config.model_type == "qwen3" and config.num_hidden_layers == 2 and config.hidden_size == 64
    assert lm.dtype == torch.float32 and not any(p.requires_grad for p in lm.model.parameters())
    assert len(lm.tokenizer) == 49152
    # the same seed gives the same weights; a forward runs
    again = load_model("qwen3-tiny-shape", device="cpu")
    assert torch.equal(lm.model.lm_head.weight, again.model.lm_head.weight)
    assert lm.model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 49152)


def test_qwen3_14b_shape_matches_the_memory_plans_shape_and_forbids_rows_beyond_the_tokenizer():
    from frost.run.memplan import QWEN3_14B

    fields = shape_config("qwen3-14b-shape")
    assert ModelShape.from_config(fields) == QWEN3_14B
    assert shape_config("Qwen/Qwen3-14B") == fields  # --random-weights with the hub id
    lm = load_model("qwen3-tiny-shape", device="cpu")
    mask = forbidden_token_mask(lm.tokenizer, 151936)
    assert bool(mask[49152:].all()) and not bool(mask[100:200].any())
    assert all(s["model_type"] == "qwen3" for s in SHAPES.values())


def test_a_config_json_is_a_shape(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SHAPES["qwen3-tiny"] | {"num_hidden_layers": 1}))
    lm = load_model(str(path), device="cpu")
    assert lm.model.config.num_hidden_layers == 1


def test_an_unknown_shape_is_one_line(capsys):
    with pytest.raises(ModelLoadError, match="unknown shape"):
        load_model("qwen9-shape", device="cpu")
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["bench", "--only", "core", "--model", "qwen9-shape", "--repeats", "1"]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qwen9-shape" in err[0]


def test_gpu_check_script_runs_on_the_cpu_at_a_tiny_shape(tmp_path):
    out = tmp_path / "check.json"
    argv = [
        "--shape", "qwen3-tiny-shape", "--consistency-shape", "qwen3-tiny-shape", "--device", "cpu", "--dtype",
        "float32", "--steps", "1", "--lora-rank", "8", "--quick", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *argv], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    arms = result["steps"]["arms"]
    assert [a["label"] for a in arms] == ["Frost K=4 taylor-gated", "GRPO K=8"]
    assert all(a["time/step_s"] > 0 and a["memplan_peak_bytes"] > 0 and a["micro_batch"] == 4 for a in arms)
    same = result["consistency"]["device-fp32_vs_cpu-fp32"]
    assert same["reward_max_abs_diff"] == 0 and same["grad_cosine"] == pytest.approx(1.0) and same["top16_shared"] == 16
    low = result["consistency"]["device-bf16_vs_device-fp32"]
    assert low["grad_cosine"] > 0.9
    assert "| Frost K=4 taylor-gated |" in proc.stdout
    trl = result["trl"]  # TRL's GRPOTrainer side by side where trl and datasets are installed (not a dependency)
    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        assert trl == {"skipped": "trl or datasets is not installed"}
    else:
        assert trl["k8"]["step_s"] > 0 and trl["k8"]["trl_over_frost"] > 0, trl
        assert trl["k8"]["K"] == 8 and trl["k4"]["K"] == 4
