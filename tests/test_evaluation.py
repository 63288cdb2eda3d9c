"""The test split (never read by training or validation), adapters kept at validation steps, `frost evaluate`, and
the near-copy measure."""

from __future__ import annotations

import json

import pytest

from frost.cli import main
from frost.config import config_from_dict
from frost.errors import ConfigError
from frost.games import copy_fraction, is_near_copy
from frost.run.evaluation import evaluate_checkpoint
from frost.run.trainer import Trainer
from test_trainer import read_metrics, tiny_base, tiny_config


def split_config(run_dir, **train):
    config = tiny_config(run_dir, **train).to_dict()
    config["data"] |= {"validation_size": 2, "test_start": 3, "test_size": 2}
    config["train"] |= {"keep_adapters": True}
    return config_from_dict(config)


def test_training_and_validation_never_read_the_test_split(tmp_path, embedded_tokenizer, monkeypatch):
    import frost.run.data

    trainer = Trainer(split_config(tmp_path / "probe", steps=0), base=tiny_base(embedded_tokenizer))
    test = frost.run.data.load_test_split(trainer.config.data, trainer.game)
    assert len(test) == 2
    test_docs = {inst.source for inst in test}

    def refuse(*args, **kwargs):
        raise AssertionError("the training path read the test split")

    monkeypatch.setattr(frost.run.data, "load_test_split", refuse)
    trainer = Trainer(split_config(tmp_path / "run", steps=2, val_every=1), base=tiny_base(embedded_tokenizer))
    seen = {inst.source for inst in trainer.train_set} | {inst.source for inst in trainer.validation}
    assert seen and not seen & test_docs
    trainer.run(progress=False)
    played = {row["doc"] for row in map(json.loads, (tmp_path / "run" / "samples.jsonl").read_text().splitlines())}
    assert not played & test_docs
    no_split = Trainer(tiny_config(tmp_path / "plain", steps=0), base=tiny_base(embedded_tokenizer))
    assert len(no_split.train_set) == len(trainer.train_set) + 2  # the same source, the test texts given back


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"validation_size": 4, "test_start": 2, "test_size": 2}, "data.test_start"),
        ({"test_size": -1}, "data.test_start and data.test_size"),
    ],
)
def test_a_test_split_that_overlaps_or_is_negative_is_refused(data, field):
    config = tiny_config("unused").to_dict()
    config["data"] |= data
    with pytest.raises(ConfigError, match=field):
        config_from_dict(config)


def test_kept_adapters_reproduce_their_logged_validation(tmp_path, embedded_tokenizer):
    run = tmp_path / "run"
    Trainer(split_config(run, steps=4, val_every=2), base=tiny_base(embedded_tokenizer)).run(progress=False)
    kept = sorted(p.name for p in (run / "adapters").iterdir())
    assert kept == ["step-0000000", "step-0000002", "step-0000004"]
    logged = {m["step"]: m for m in read_metrics(run) if "val/best_of_2" in m}
    results = {}
    for step in (0, 2, 4):
        out = tmp_path / f"eval-{step}"
        summary = evaluate_checkpoint(
            run / "adapters" / f"step-{step:07d}", split="validation", samples=2, out=out,
            base=tiny_base(embedded_tokenizer),
        )  # fmt: skip
        assert summary["step"] == step
        assert summary["val/best_of_2"] == pytest.approx(logged[step]["val/best_of_2"], abs=1e-4)
        assert summary["val/reward_mean"] == pytest.approx(logged[step]["val/reward_mean"], abs=1e-4)
        results[step] = summary
    assert results[0]["val/best_of_2"] != results[4]["val/best_of_2"]  # the adapters differ
    test = evaluate_checkpoint(
        run / "adapters" / "step-0000004", split="test", samples=2, out=tmp_path / "test",
        base=tiny_base(embedded_tokenizer), record={"record_sha256": "abc"},
    )  # fmt: skip
    assert test["texts"] == 2 and test["record_sha256"] == "abc"
    rows = [json.loads(x) for x in (tmp_path / "test" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["shown"] and len(r["moves"]) == 2 for r in rows)


def test_a_resumed_run_drops_adapters_kept_past_its_checkpoint(tmp_path, embedded_tokenizer):
    run = tmp_path / "run"
    Trainer(split_config(run, steps=2, val_every=1, checkpoint_every=2), base=tiny_base(embedded_tokenizer)).run(
        progress=False
    )
    stale = run / "adapters" / "step-0000003"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"from a run killed after step 3")
    Trainer(split_config(run, steps=2, val_every=1), resume=True, base=tiny_base(embedded_tokenizer))
    assert not stale.exists() and (run / "adapters" / "step-0000002").is_dir()


def test_evaluate_without_a_test_split_is_one_line(tmp_path, embedded_tokenizer, capsys):
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=1, val_every=0), base=tiny_base(embedded_tokenizer)).run(progress=False)
    assert main(["evaluate", str(run), "--split", "test", "--out", str(tmp_path / "o"), "--model", "embedded"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.test_size" in err


@pytest.mark.parametrize(
    ("move", "shown", "fraction"),
    [
        (" the sun beat down on the team as", "The sun beat down on the team as they walked.", 1.0),
        (", I stepped out of the grand cru", "As I stepped out of the grand cru, the air", 1.0),
        ("a cat sat down", "the dog sat down", 0.5),
        ("Moonlight over quiet water", "The sun beat down on the team", 0.0),
        ("", "anything", 0.0),
        ("the the the", "the", 1 / 3),
        ("The sun beat down hard today", "the sun beat down on them", 4 / 6),
    ],
)
def test_copy_fraction_on_hand_made_cases(move, shown, fraction):
    assert copy_fraction(move, shown) == pytest.approx(fraction)
    assert is_near_copy(move, shown) == (fraction >= 0.7)


def test_near_copy_threshold_is_inclusive():
    assert is_near_copy("one two three four five six seven x y z", "one two three four five six seven")
    assert not is_near_copy("one two three four five six x y z w", "one two three four five six")


def test_evaluate_refuses_an_unknown_split(tmp_path, embedded_tokenizer):
    run = tmp_path / "run"
    Trainer(tiny_config(run, steps=1, val_every=0), base=tiny_base(embedded_tokenizer)).run(progress=False)
    with pytest.raises(ConfigError, match="--split"):
        evaluate_checkpoint(run, split="dev", out=tmp_path / "o", base=tiny_base(embedded_tokenizer))
