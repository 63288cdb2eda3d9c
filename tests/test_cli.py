"""Command-line errors: exit code 2 and one line naming the field, before any model is loaded."""

from __future__ import annotations

import pytest
import torch

from frost.cli import main

PAIR = ["--begin", "Once upon a time", "--end", " there was a cat."]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["score", *PAIR, "--move", ""], "--move"),
        (["score", *PAIR, "--move-ids", ""], "--move-ids"),
        (["score", *PAIR, "--move", " hi", "--mode", "second-order"], "mode"),
        (["score", *PAIR, "--move", " hi", "--tau", "1.5"], "--tau"),
        (["score", *PAIR, "--move", " hi", "--tau", "0"], "--tau"),
        (["score", *PAIR, "--move", " hi", "--top", "-1"], "--top"),
        (["score", *PAIR], "--move"),
        (["infill", *PAIR, "--L", "0"], "--L"),
        (["infill", *PAIR, "--K", "0"], "--K"),
        (["infill", *PAIR, "--tau", "1"], "tau"),
        (["infill", *PAIR, "--rule", "best"], "frost.rule"),
        (["score", *PAIR, "--move-ids", "1,x"], "--move-ids"),
        (["diagnose", "selection", "--D", "1,a"], "--D"),
        (["diagnose", "selection", "--rules", "taylor,nope"], "frost.rule"),
        (["diagnose", "selection", "--tau", "1e-4,2"], "tau"),
        (["diagnose", "selection", "--rank-by", "gain"], "rank_by"),
        (["diagnose", "selection", "--K", "4,x"], "--K"),
        (["diagnose", "selection", "--K", "0"], "--K"),
        (["diagnose", "samples", "nowhere-a", "nowhere-b"], "nowhere-a"),
        (["diagnose", "selection", "--checkpoint", "nowhere"], "nowhere"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field(argv, field, capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert field in err
    assert "Traceback" not in err


def test_rules_lists_all_seven(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for rule in ("random", "topprob", "taylor", "taylor-gated", "full", "full-gated", "judge-gated"):
        assert rule in out


def _one_line_exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    line = _one_line_exit_2(["score", *PAIR, "--move", " hi", "--model", str(tmp_path)], capsys)
    assert str(tmp_path) in line and "not a loadable model" in line


def test_a_device_that_is_not_there_is_one_line(capsys):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    line = _one_line_exit_2(["score", *PAIR, "--move", " hi", "--device", "cuda:7"], capsys)
    assert "model.device" in line and "cuda:7" in line


def test_a_move_longer_than_the_models_context_is_one_line(capsys):
    line = _one_line_exit_2(["infill", *PAIR, "--L", "9000", "--K", "2"], capsys)
    assert "context of 8192" in line and "move_length" in line


def test_a_model_that_cannot_fit_is_refused_before_loading_unless_forced(monkeypatch):
    import torch

    import frost.models as models
    from frost.errors import ConfigError

    monkeypatch.setattr(models, "available_memory", lambda device: 10 * 2**20)  # 10 MiB free
    with pytest.raises(ConfigError, match=r"model\.name: qwen3-tiny-shape needs about .* --force"):
        models.load_model("qwen3-tiny-shape", device="cpu")
    loaded = models.load_model("qwen3-tiny-shape", device="cpu", force=True)  # tried anyway
    assert loaded.dtype == torch.float32
    monkeypatch.setattr(models, "available_memory", lambda device: 64 * 2**30)
    models.load_model("qwen3-tiny-shape", device="cpu")  # fits
    models.check_memory("not/a-known-hub-id", torch.device("cpu"), torch.float32)  # unknown shape: not checked
