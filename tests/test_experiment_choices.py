"""An experiment's grid, its choices on the dev texts (choices.json), and the test phase that reads the test split
once, on a tiny random-weight model; every choice recomputed here from the runs' logs."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import pytest
import yaml

from frost.analysis.experiment.runner import _run_test, load_experiment
from frost.cli import main
from frost.errors import ConfigError
from test_experiment import COMMON

SPLITS = {"data.validation_size": 2, "data.test_start": 2, "data.test_size": 2, "train.keep_adapters": True,
          "train.steps": 2, "train.val_documents": 2}  # fmt: skip


def write(folder: Path, out: Path) -> Path:
    spec = {
        "out": str(out),
        "seeds": [0, 1],
        "set": {**COMMON, **SPLITS},
        "reference": "grpo",
        "baselines": ["grpo"],
        "grid": {"field": "optim.lr", "values": [0.03, 0.001], "seed": 0},
        "choose": {"last": 2},
        "test": {"samples": 2},
        "arms": {
            "grpo": {"set": {"train.algorithm": "grpo", "train.K": 4}},
            "frost": {"set": {"train.algorithm": "frost", "frost.rule": "judge-gated"}},
        },
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dev_best(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val/best_of_2"]) for r in rows if "val/best_of_2" in r]


def test_grid_choices_then_one_test_phase(tmp_path, capsys):
    out = tmp_path / "out"
    path = write(tmp_path, out)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "frost-G0-seed0", "frost-G1-seed0", "frost-seed0", "frost-seed1",
        "grpo-G0-seed0", "grpo-G1-seed0", "grpo-seed0", "grpo-seed1",
    ]  # fmt: skip
    choices = json.loads((out / "choices.json").read_text())
    assert choices["complete"] and "last 2 validation steps" in choices["rule"]
    for arm in ("grpo", "frost"):
        scores = [statistics.fmean(v for _, v in dev_best(runs / f"{arm}-G{i}-seed0")[-2:]) for i in (0, 1)]
        pick = 0 if scores[0] >= scores[1] else 1
        assert choices["arms"][arm]["value"] == [0.03, 0.001][pick]
        assert (runs / f"{arm}-seed0").is_symlink() and (runs / f"{arm}-seed0").resolve().name == f"{arm}-G{pick}-seed0"
        config = yaml.safe_load((runs / f"{arm}-seed1" / "config.yaml").read_text())
        assert config["optim"]["lr"] == [0.03, 0.001][pick]  # the other seeds train at the chosen value
        for seed in (0, 1):
            vals = dev_best(runs / f"{arm}-seed{seed}")
            best = max(v for _, v in vals)
            chosen = choices["checkpoints"][f"{arm}-seed{seed}"]
            assert chosen["best_dev"] == next(s for s, v in vals if v == best) and chosen["last"] == 2
    assert not (out / "test").exists()  # nothing read the test split yet
    test_docs = set()
    assert main(["experiment", str(path), "--no-progress", "--threads", "1", "--test"]) == 0
    digest = hashlib.sha256((out / "choices.json").read_bytes()).hexdigest()
    for run, chosen in choices["checkpoints"].items():
        for kind in ("last", "best_dev"):
            folder = out / "test" / run / f"step-{chosen[kind]:07d}"
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["record_sha256"] == digest and summary["split"] == "test" and summary["texts"] == 2
            rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
            test_docs |= {r["doc"] for r in rows}
            assert all(len(r["shown_parts"]) == 2 and r["shown"] == r["shown_parts"][0] for r in rows)  # x, then z
    assert len(test_docs) == 2
    for run in runs.iterdir():  # the runs' own validations never saw a test text
        played = {json.loads(x)["doc"] for x in (run / "samples.jsonl").read_text().splitlines()}
        assert played and not played & test_docs
    summary = json.loads((out / "summary.json").read_text())
    pair = next(p for p in summary["test"]["pairs"] if p["checkpoint"] == "last")
    diffs = []
    for seed in (0, 1):
        best = {}
        for arm in ("frost", "grpo"):
            step = choices["checkpoints"][f"{arm}-seed{seed}"]["last"]
            rows = (out / "test" / f"{arm}-seed{seed}" / f"step-{step:07d}" / "samples.jsonl").read_text()
            best[arm] = {r["doc"]: max(m["reward"] for m in r["moves"]) for r in map(json.loads, rows.splitlines())}
        diffs += [best["frost"][d] - best["grpo"][d] for d in sorted(best["frost"])]
    assert pair["n"] == 4 and pair["mean"] == pytest.approx(statistics.fmean(diffs))
    assert "Test split" in (out / "summary.md").read_text()


def test_the_test_phase_waits_for_complete_choices(tmp_path):
    experiment = load_experiment(write(tmp_path, tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"choices\.json is not complete"):
        _run_test(experiment, lambda record: None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grid": {"field": "optim.lr", "values": [0.1]}}, "experiment.grid.values"),
        ({"grid": {"field": "lr", "values": [0.1, 0.2]}}, "experiment.grid.field"),
        ({"choose": {"last": 0}}, "experiment.choose"),
        ({"test": {"samples": 0}}, "experiment.test"),
        ({"test": {"samples": 2, "when": "later"}}, "experiment.test.when"),
        ({"baselines": ["nope"]}, "experiment.baselines"),
    ],
)
def test_bad_grid_choose_and_test_blocks_are_one_line(tmp_path, capsys, change, field):
    path = write(tmp_path, tmp_path / "out")
    spec = yaml.safe_load(path.read_text()) | change
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path), "--summary-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err


def _fake_test(out: Path, run: str, step: int, rows: list[tuple[str, str, float]], digest: str) -> None:
    """A test-phase result of `run` at `step`: per test text (doc, best move's text, its reward), shown text
    SHOWN, evaluated under choices.json of SHA-256 `digest`."""
    folder = out / "test" / run / f"step-{step:07d}"
    folder.mkdir(parents=True)
    samples = [{"doc": d, "shown": SHOWN, "shown_parts": [SHOWN, END],
                "moves": [{"text": t, "reward": r}, {"text": "zz", "reward": r - 5}]} for d, t, r in rows]  # fmt: skip
    (folder / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    (folder / "summary.json").write_text(json.dumps({"record_sha256": digest}))
    (folder / "done.json").write_text("{}")


SHOWN = "The sun beat down on the team as they walked"
END = "A quiet bell rang far away in the hills."


def test_the_test_summary_by_hand(tmp_path):
    """Three seeds, two baselines: the headline baseline is the one better on dev; per-seed differences, the t
    interval and the verdict by hand; the near-copy subset read the same way; a result evaluated under other choices
    is not counted and is named."""
    from frost.analysis.experiment.choices import test_summary, verdict
    from frost.analysis.experiment.runner import test_markdown

    out = tmp_path
    dev = (("grpo", -200.0), ("passk", -199.0), ("frost", -198.0))
    checkpoints = {f"{arm}-seed{s}": {"last": 96, "best_dev": 48, "best_dev_value": value}
                   for arm, value in dev for s in (0, 1, 2)}  # fmt: skip
    (out / "choices.json").write_text(json.dumps({"complete": True, "checkpoints": checkpoints}))
    digest = hashlib.sha256((out / "choices.json").read_bytes()).hexdigest()
    copy, fresh = " the sun beat down on the team", "a quiet bell rang far away"
    for s, lift in ((0, 2.0), (1, 2.5), (2, 3.0)):
        for step in (48, 96):
            _fake_test(out, f"grpo-seed{s}", step, [("a", copy, -190.0), ("b", fresh, -200.0)], digest)
            _fake_test(out, f"passk-seed{s}", step, [("a", copy, -190.0), ("b", fresh, -200.0)], digest)
            # text a: frost's best is a near-copy variant of the baselines' and wins by lift; text b: a fresh move,
            # also ahead by lift on the no-copy subset
            ours = [
                ("a", "The sun beat down on the team", -190.0 + lift),
                ("b", "bells rang in the valley", -200.0 + lift),
            ]
            _fake_test(out, f"frost-seed{s}", step, ours, digest)
    stale = out / "test" / "grpo-seed2" / "step-0000048" / "summary.json"
    stale.write_text(json.dumps({"record_sha256": "0" * 64}))  # evaluated under other choices
    seeds = {"grpo": [0, 1, 2], "passk": [0, 1, 2], "frost": [0, 1, 2]}
    test = test_summary(out, json.loads((out / "choices.json").read_text()), ["grpo", "passk", "frost"],
                        ["grpo", "passk"], seeds)  # fmt: skip
    assert test["best_baseline"] == "passk" and test["choices_sha256"] == digest
    assert test["missing"] == ["grpo-seed2 (best_dev)"]
    assert test["arms"]["grpo"]["best_dev"]["seeds"] == 2 and test["arms"]["grpo"]["best_dev"]["seeds_expected"] == 3
    head = next(p for p in test["pairs"] if p["arm"] == "frost" and p["against"] == "passk" and
                p["checkpoint"] == "best_dev")  # fmt: skip
    assert [q["mean"] for q in head["per_seed"]] == [2.0, 2.5, 3.0] and head["n"] == 6
    assert head["over_seeds"]["ci95"] == pytest.approx(4.303 * 0.5 / 3**0.5) and head["verdict"] == "win"
    assert head["wins_near_copy_of_baseline"] == 3  # text a, every seed
    assert head["no_copy"]["n"] == 3 and [q["mean"] for q in head["no_copy"]["per_seed"]] == [2.0, 2.5, 3.0]
    assert head["no_copy"]["verdict"] == "win"
    against_grpo = next(p for p in test["pairs"] if p["arm"] == "frost" and p["against"] == "grpo" and
                        p["checkpoint"] == "best_dev")  # fmt: skip
    assert [q["seed"] for q in against_grpo["per_seed"]] == [0, 1] and against_grpo["seeds_expected"] == 3
    assert against_grpo["verdict"] == "no difference shown"  # +2.25 +- 12.706 * 0.25 over two seeds
    near = test["arms"]["grpo"]["last"]["near_copy"]["mean"]
    assert near == pytest.approx(0.5)  # text a's copy is a near-copy of the shown text, text b's move is not
    assert test["arms"]["grpo"]["last"]["near_copy_any_part"]["mean"] == pytest.approx(1.0)  # b's copies the end
    assert test["arms"]["frost"]["last"]["near_copy_any_part"]["mean"] == pytest.approx(0.5)
    md = "\n".join(test_markdown(test))
    assert "Headline: each arm minus the best baseline (passk" in md and "| frost | seed 0: +2.00" in md
    assert "Not evaluated under this choices.json, not counted above: grpo-seed2 (best_dev)." in md
    assert "2 of 3" in md
    assert verdict({"mean": -3.0, "ci95": 1.0, "n": 3}) == "loss"
    assert verdict({"mean": 3.0, "ci95": 4.0, "n": 3}) == "no difference shown"
    assert verdict({"mean": 3.0, "ci95": float("nan"), "n": 1}) == "no difference shown"


def _finished_run(run_dir: Path, steps: int, best: float) -> None:
    """A run folder whose checkpoint reached `steps`, validated at 0 and `steps` (dev best-of-2 `best` at the end)."""
    ckpt = run_dir / "checkpoints" / f"step-{steps:07d}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": steps}))
    (run_dir / "checkpoints" / "latest").write_text(ckpt.name)
    rows = [{"step": 0, "val/best_of_2": -9.0}, {"step": steps, "val/best_of_2": best}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_an_arm_chosen_last_trains_its_other_seeds_before_the_choices_are_complete(tmp_path):
    """The last arm's grid finishes after every other planned run: choosing it adds its other seeds to the plan, so
    choices.json is not marked complete (nor its checkpoints read) before they have trained."""
    from frost.analysis.experiment.runner import update_choices

    out = tmp_path / "out"
    experiment = load_experiment(write(tmp_path, out))
    steps = 2
    for arm in ("grpo", "frost"):
        for i in (0, 1):
            _finished_run(out / "runs" / f"{arm}-G{i}-seed0", steps, -5.0 - i)
    first = update_choices(experiment)
    assert set(first["arms"]) == {"grpo", "frost"} and not first.get("complete")
    # now as if frost had been chosen last: only grpo's choice on disk, grpo's seed 1 finished
    choices = json.loads((out / "choices.json").read_text())
    del choices["arms"]["frost"]
    (out / "choices.json").write_text(json.dumps(choices))
    (out / "runs" / "frost-seed0").unlink()
    _finished_run(out / "runs" / "grpo-seed1", steps, -4.0)
    again = update_choices(experiment)
    assert set(again["arms"]) == {"grpo", "frost"} and not again.get("complete")  # frost-seed1 has not trained
    _finished_run(out / "runs" / "frost-seed1", steps, -4.5)
    done = update_choices(experiment)
    assert done["complete"] and done["checkpoints"]["frost-seed1"]["best_dev"] == steps


def _each_run(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    path = write(tmp_path, out)
    spec = yaml.safe_load(path.read_text())
    spec["test"] = {"samples": 2, "when": "each-run"}
    path.write_text(yaml.safe_dump(spec))
    return path, out


def _events(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]


def test_each_run_is_read_on_test_as_it_finishes_under_its_own_choice(tmp_path):
    """`test: {when: each-run}`: each main run's checkpoints are chosen from its own dev log and written down, then
    read on test by the same process right after its training (before the next run trains); the non-chosen grid runs
    are never read; every reading records the SHA-256 of its run's choice file; `--test` is refused."""
    from frost.analysis.experiment.choices import run_choice, run_choice_text

    path, out = _each_run(tmp_path)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    choices = json.loads((out / "choices.json").read_text())
    assert choices["complete"] and not choices.get("replaced")
    mains = ["frost-seed0", "frost-seed1", "grpo-seed0", "grpo-seed1"]
    assert sorted(p.name for p in (out / "test").iterdir()) == mains
    events = _events(out)
    for run in mains:
        arm, seed = run.rsplit("-seed", 1)
        chosen = choices["checkpoints"][run]
        vals = dev_best(out / "runs" / run)  # the rule, recomputed from the run's log
        assert chosen["best_dev"] == next(s for s, v in vals if v == max(v for _, v in vals)) and chosen["last"] == 2
        text = (out / "test" / run / "choice.json").read_text()
        assert text == run_choice_text(run_choice(choices, arm, run))
        digest = hashlib.sha256(text.encode()).hexdigest()
        for step in {chosen["last"], chosen["best_dev"]}:
            summary = json.loads((out / "test" / run / f"step-{step:07d}" / "summary.json").read_text())
            assert summary["record_sha256"] == digest and summary["split"] == "test"
        # its reading follows its training (at seed 0: the arm's last grid run, which makes the choice) with no run
        # started in between
        names = {f"{arm}-G0", f"{arm}-G1"} if seed == "0" else {arm}
        done = max(i for i, e in enumerate(events) if e.get("arm") in names and e["event"] == "done"
                   and e["seed"] == int(seed))  # fmt: skip
        read = [i for i, e in enumerate(events) if e.get("diagnostic", "").startswith(f"{run}/")]
        assert read and min(read) > done
        assert not [e for e in events[done + 1 : min(read)] if e["event"] == "start"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["pairs"] and not summary["test"]["missing"]
    assert "each main run read once, as it finished" in (out / "summary.md").read_text()
    assert main(["experiment", str(path), "--no-progress", "--test"]) == 2  # one line: there is no final phase


def test_each_run_trains_again_a_main_run_whose_adapters_were_lost(tmp_path):
    """A machine that kept only the logs: runs whose last event is "done" stay finished; a main run never read on
    test trains again from its start (at the grid seed in a folder of its own, the grid run left as the record of the
    choice), its earlier choice kept under "replaced"; the summary is sealed until every choice is made."""
    import shutil

    path, out = _each_run(tmp_path)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    for folder in (out / "runs").iterdir():  # a new machine: no checkpoint, no adapter
        if not folder.is_symlink():
            shutil.rmtree(folder / "checkpoints")
            shutil.rmtree(folder / "adapters")
    shutil.rmtree(out / "claims")
    for run in ("grpo-seed0", "frost-seed1"):  # as if the session had ended before their test readings
        shutil.rmtree(out / "test" / run)
    grid_run = (out / "runs" / "grpo-seed0").resolve()
    grid_log = (grid_run / "metrics.jsonl").read_text()
    before = len(_events(out))
    experiment = load_experiment(path)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1", "--until", "2000-01-01T00:00"]) == 0
    assert len(_events(out)) == before  # past --until: nothing trained, nothing read
    from frost.analysis.experiment.runner import write_summary

    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    started = [(e["arm"], e["seed"]) for e in _events(out)[before:] if e["event"] == "start"]
    assert sorted(started) == [("frost", 1), ("grpo", 0)]
    seed0 = out / "runs" / "grpo-seed0"
    assert seed0.is_dir() and not seed0.is_symlink() and (grid_run / "metrics.jsonl").read_text() == grid_log
    choices = json.loads((out / "choices.json").read_text())
    assert choices["complete"] and {r["run"] for r in choices["replaced"]} <= {"grpo-seed0", "frost-seed1"}
    assert (out / "test" / "grpo-seed0").is_dir() and (out / "test" / "frost-seed1").is_dir()
    assert not write_summary(experiment)["test"]["missing"]
    # sealed while a choice is missing
    del choices["checkpoints"]["frost-seed1"]
    choices["complete"] = False
    (out / "choices.json").write_text(json.dumps(choices))
    sealed = write_summary(experiment)["test"]
    assert sealed["sealed"] and "pairs" not in sealed and "sealed" in (out / "summary.md").read_text()


def test_until_reads_a_time_of_day_as_the_next_one_and_an_iso_time_as_given():
    import datetime

    from frost.cli.values import _clock

    now = datetime.datetime(2026, 12, 2, 13, 0)
    assert _clock("13:35", now) == datetime.datetime(2026, 12, 2, 13, 35).timestamp()
    assert _clock("12:59", now) == datetime.datetime(2026, 12, 3, 12, 59).timestamp()  # past today: tomorrow
    assert _clock("2026-12-05T08:00", now) == datetime.datetime(2026, 12, 5, 8, 0).timestamp()
    with pytest.raises(ValueError, match="HH:MM"):
        _clock("25:00", now)
