"""`frost experiment`: arms x seeds on a tiny random-weight model, the summary's statistics, skip and resume after a
kill (at most the step in progress is lost), and bad experiment files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from frost.analysis.experiment.runner import best_by_text, load_experiment
from frost.analysis.stats import mean_ci
from frost.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMON = {
    "model.name": "qwen3-tiny-shape",
    "model.device": "cpu",
    "lora.rank": 4,
    "lora.alpha": 8,
    "optim.lr": 0.01,
    "data.source": "handwritten",
    "data.validation_size": 3,
    "train.K": 2,
    "train.batch_size": 2,
    "train.steps": 3,
    "train.val_every": 1,
    "train.val_documents": 3,
    "train.val_samples": 2,
}


def write_experiment(folder: Path, out: Path) -> Path:
    spec = {
        "out": str(out),
        "seeds": [0, 1],
        "set": COMMON,
        "reference": "grpo",
        "arms": {
            "grpo": {"set": {"train.algorithm": "grpo", "train.K": 4}},
            "frost": {"set": {"train.algorithm": "frost", "frost.rule": "judge-gated"}},
            "grpo-k2": {"set": {"train.algorithm": "grpo"}, "seeds": [0]},
        },
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_metrics_with_times(out: Path) -> dict[str, list[dict]]:
    return {
        d.name: [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (out / "runs").iterdir()
    }


def run_metrics(out: Path) -> dict[str, list[dict]]:
    return {
        d.name: [
            {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in sorted((out / "runs").iterdir())
    }


def test_mean_ci_uses_student_t():
    stats = mean_ci([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["se"] == pytest.approx(1 / 3**0.5)
    assert stats["ci95"] == pytest.approx(4.303 / 3**0.5)


def test_experiment_trains_every_arm_and_seed_summarizes_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_experiment(tmp_path, out)
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["frost-seed0", "frost-seed1", "grpo-k2-seed0",
                                                               "grpo-seed0", "grpo-seed1"]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    frost = summary["arms"]["frost"]
    assert [r["steps"] for r in frost["runs"]] == [3, 3]
    last = frost["curves"][str(3)]
    assert last["best"]["n"] == 2
    # compute spent up to the validation step, recomputed from each run's metrics
    spent = [[r for r in run if "loss" in r] for name, run in run_metrics_with_times(out).items() if "frost" in name]
    assert last["judge_fwd"]["mean"] == pytest.approx(sum(sum(r["judge_fwd_seqs"] for r in s) for s in spent) / 2)
    assert last["wall_s"]["mean"] == pytest.approx(sum(sum(r["time/step_s"] for r in s) for s in spent) / 2)
    assert frost["curves"]["0"]["judge_fwd"]["mean"] == 0
    from PIL import Image

    assert Image.open(out / "curves.png").size[0] > 1000
    # the paired difference, recomputed by hand from the samples of both arms
    diffs = []
    for seed in (0, 1):
        mine = best_by_text(out / "runs" / f"frost-seed{seed}", 3)
        theirs = best_by_text(out / "runs" / f"grpo-seed{seed}", 3)
        assert len(mine) == 3
        diffs += [mine[d] - theirs[d] for d in mine]
    paired = frost["paired"]
    assert paired["n"] == 6 and paired["mean"] == pytest.approx(sum(diffs) / 6)
    assert paired["wins"] + paired["losses"] + paired["ties"] == 6
    assert summary["arms"]["grpo"]["paired"] is None
    assert "| frost |" in capsys.readouterr().out
    before = run_metrics(out)
    events = (out / "progress.jsonl").read_text().count('"start"')
    assert main(["experiment", str(path), "--no-progress"]) == 0  # everything finished: nothing retrains
    assert run_metrics(out) == before and (out / "progress.jsonl").read_text().count('"start"') == events


def test_a_killed_experiment_resumes_losing_at_most_the_step_in_progress(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "frost.cli", "experiment", "--no-progress", "--threads", "1"]
    runs = {}
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        runs[name] = write_experiment(tmp_path / name, tmp_path / name / "out")
    whole, killed = tmp_path / "whole" / "out", tmp_path / "killed" / "out"
    subprocess.run([*cmd, str(runs["whole"])], env=env, check=True, capture_output=True, timeout=600)
    path = runs["killed"]
    proc = subprocess.Popen([*cmd, str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        progress = killed / "progress.jsonl"
        while not (progress.is_file() and progress.read_text().count('"event": "step"') >= 5):  # run 2, step 2
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    subprocess.run([*cmd, str(path)], env=env, check=True, capture_output=True, timeout=600)
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert any(e["event"] == "resume" for e in events)
    assert run_metrics(killed) == run_metrics(whole)


def stop_when_logged(cmd: list[str], env: dict[str, str], progress: Path, text: str) -> tuple[int, str]:
    """Start `cmd`, send it SIGTERM once `progress` holds `text`, and return its exit code and standard error."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (progress.is_file() and text in progress.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_a_stop_signal_pauses_the_experiment_instead_of_starting_the_next_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    path = write_experiment(tmp_path, tmp_path / "out")
    cmd = [sys.executable, "-m", "frost.cli", "experiment", "--no-progress", "--threads", "1", str(path)]
    progress = tmp_path / "out" / "progress.jsonl"
    code, err = stop_when_logged(cmd, env, progress, '"event": "step"')
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert code == 130 and "paused" in err and "resume" in err
    assert [e["event"] for e in events if e["event"] != "step"] == ["start", "paused"]
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1  # the next run never started


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"out": "x", "arms": {}}, "experiment.arms"),
        ({"out": "x", "arms": {"a": {"config": "nowhere.yaml"}}}, "experiment.arms.a.config"),
        ({"out": "x", "arms": {"a": {"sett": {}}}}, "experiment.arms.a"),
        ({"out": "x", "arms": {"a": {}}, "reference": "b"}, "experiment.reference"),
        ({"out": "x", "arms": {"a": {}}, "seeds": "0"}, "experiment.seeds"),
        ({"out": "x", "arms": {"a": {"set": {"steps": 3}}}}, "experiment.arms.a.set"),
        ({"arms": {"a": {}}}, "experiment.out"),
        ({"out": "x", "arms": {"a": {}}, "colour": 1}, "colour"),
        ({"out": "x", "arms": {"a": {}}, "final": {"samples": {"promts": 3}}}, "experiment.final.samples"),
        (
            {"out": "x", "arms": {"a": {}}, "final": {"selection": {"rules": ["nope"]}}},
            "experiment.final.selection.rules",
        ),
        ({"out": "x", "arms": {"a": {}}, "final": {"selection": {"tau": 2}}}, "experiment.final.selection.tau"),
        ({"out": "x", "arms": {"a": {}}, "final": {"plots": {}}}, "experiment.final"),
        ({"out": "x", "arms": {"a": {}}, "final": {"samples": {}}}, "experiment.final.samples"),  # no reference
    ],
)
def test_bad_experiment_files_get_one_line(tmp_path, capsys, spec, field):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_a_missing_experiment_file_is_one_line(tmp_path, capsys):
    assert main(["experiment", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(Exception, match="does not exist"):
        load_experiment(tmp_path / "none.yaml")


def _fake_run(run_dir: Path, fwd_per_step: int, best: dict[int, list[float]]) -> None:
    """A run folder with 4 training steps of `fwd_per_step` judge forwards, validated at steps 0, 2 and 4 on two
    texts whose best rewards are `best[step]`."""
    run_dir.mkdir(parents=True)
    rows = [{"step": s, "reward": 0.0, "judge_fwd_seqs": fwd_per_step, "time/step_s": 1.0} for s in (1, 2, 3, 4)]
    val = {"val/reward_mean": 0.0, "val/token_entropy": 0.1, "val/score_var": 0.0, "val/frac_zero_var": 0.0}
    rows += [{"step": s, **val, "val/best_of_2": max(b)} for s, b in best.items()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = [{"step": s, "doc": f"doc{i}", "moves": [{"text": "x", "reward": r}]} for s, b in best.items()
               for i, r in enumerate(b)]  # fmt: skip
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))


def test_paired_at_matched_judge_forwards_takes_the_arm_where_it_had_spent_as_much(tmp_path):
    from frost.analysis.experiment.runner import Arm, Experiment, paired

    # the reference spends 10 judge forwards a step (40 by step 4), the arm 20 (40 by step 2)
    _fake_run(tmp_path / "runs" / "ref-seed0", 10, {0: [-9.0, -9.0], 2: [-8.0, -8.0], 4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "arm-seed0", 20, {0: [-9.0, -9.0], 2: [-4.0, -7.0], 4: [-1.0, -1.0]})
    experiment = Experiment(out=tmp_path, seeds=[0], arms=[Arm("ref", None), Arm("arm", None)], reference="ref")
    by_step = paired(experiment, experiment.arms[1])
    assert by_step is not None and by_step["steps"] == [4] and by_step["mean"] == pytest.approx((4 + 5) / 2)
    matched = paired(experiment, experiment.arms[1], matched="judge_fwd")
    assert matched is not None
    assert matched["steps"] == [2] and matched["judge_fwd"] == [40]
    assert matched["reference_steps"] == [4] and matched["reference_judge_fwd"] == [40]
    # per text: (-4) - (-5) = +1, (-7) - (-6) = -1
    assert matched["mean"] == pytest.approx(0.0) and (matched["wins"], matched["losses"]) == (1, 1)


def test_unfinished_runs_are_listed_not_counted(tmp_path):
    from frost.analysis.experiment.runner import Arm, Experiment, markdown, summarize

    _fake_run(tmp_path / "runs" / "ref-seed0", 10, {0: [-9.0, -9.0], 4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "ref-seed1", 10, {0: [-9.0, -9.0], 4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "arm-seed0", 10, {0: [-9.0, -9.0], 4: [-1.0, -1.0]})
    _fake_run(tmp_path / "runs" / "arm-seed1", 10, {0: [-9.0, -9.0]})  # a run still at its start
    events = [("ref", 0, "done", 4), ("arm", 0, "done", 4), ("ref", 1, "done", 4), ("arm", 1, "start", 0)]
    (tmp_path / "progress.jsonl").write_text(
        "".join(json.dumps({"arm": a, "seed": s, "event": e, "step": n}) + "\n" for a, s, e, n in events)
    )
    experiment = Experiment(out=tmp_path, seeds=[0, 1], arms=[Arm("ref", None), Arm("arm", None)], reference="ref")
    summary = summarize(experiment)
    arm = summary["arms"]["arm"]
    assert [r["seed"] for r in arm["runs"]] == [0] and arm["curves"][0]["best"]["n"] == 1
    assert arm["paired"]["steps"] == [4] and arm["paired"]["n"] == 2  # seed 0 only: (-1) - (-5), (-1) - (-6)
    assert arm["paired"]["mean"] == pytest.approx(4.5)
    assert summary["in_progress"] == [{"arm": "arm", "seed": 1, "step": 0}]
    assert "Unfinished runs, not counted above or below: arm seed 1 (step 0)." in markdown(summary)
    assert summary["not_started"] == []
    # A seed the file asks for that no worker has started is named too: "every run finished" is checkable.
    experiment = Experiment(out=tmp_path, seeds=[0, 1, 2], arms=[Arm("ref", None), Arm("arm", None)], reference="ref")
    summary = summarize(experiment)
    assert summary["not_started"] == [{"arm": "ref", "seed": 2}, {"arm": "arm", "seed": 2}]
    assert "Runs not started yet: ref seed 2, arm seed 2." in markdown(summary)
    assert [r["seed"] for r in summary["arms"]["arm"]["runs"]] == [0]


def test_paired_reports_the_mean_difference_of_each_seed_and_the_seeds_won(tmp_path):
    from frost.analysis.experiment.runner import Arm, Experiment, markdown, summarize

    _fake_run(tmp_path / "runs" / "ref-seed0", 10, {4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "arm-seed0", 10, {4: [-1.0, -1.0]})  # +4, +5
    _fake_run(tmp_path / "runs" / "ref-seed1", 10, {4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "arm-seed1", 10, {4: [-7.0, -6.0]})  # -2, 0
    experiment = Experiment(out=tmp_path, seeds=[0, 1], arms=[Arm("ref", None), Arm("arm", None)], reference="ref")
    summary = summarize(experiment)
    p = summary["arms"]["arm"]["paired"]
    assert p["per_seed"] == [{"seed": 0, "mean": 4.5, "n": 2}, {"seed": 1, "mean": -1.0, "n": 2}]
    assert p["seeds_won"] == 1 and p["mean"] == pytest.approx(7 / 4)
    assert (p["wins"], p["losses"], p["ties"]) == (2, 1, 1)
    assert p["over_seeds"]["mean"] == pytest.approx(1.75) and p["over_seeds"]["ci95"] == pytest.approx(12.706 * 2.75)
    assert "| 2 / 1 / 1 | +4.50, -1.00 (1 of 2) | +1.75 +- 34.94 |" in markdown(summary)


def test_two_workers_share_out_the_runs_and_train_each_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "frost.cli", "experiment", "--no-progress", "--threads", "1"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    alone = write_experiment(tmp_path / "one", tmp_path / "one" / "out")
    shared = write_experiment(tmp_path / "two", tmp_path / "two" / "out")
    subprocess.run([*cmd, str(alone)], env=env, check=True, capture_output=True, timeout=600)
    workers = [subprocess.Popen([*cmd, str(shared)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]  # fmt: skip
    for w in workers:
        assert w.wait(timeout=600) == 0
    events = [json.loads(line) for line in (tmp_path / "two" / "out" / "progress.jsonl").read_text().splitlines()]
    starts = [(e["arm"], e["seed"]) for e in events if e["event"] == "start"]
    assert sorted(starts) == sorted(set(starts)) and len(starts) == 5  # every run trained once, by one worker
    assert len({e["pid"] for e in events if e["event"] == "start"}) == 2  # both workers trained
    assert run_metrics(tmp_path / "two" / "out") == run_metrics(tmp_path / "one" / "out")
    summary = json.loads((tmp_path / "two" / "out" / "summary.json").read_text())
    assert summary["in_progress"] == [] and len(summary["arms"]["frost"]["runs"]) == 2


def test_a_claim_of_a_live_worker_is_respected_and_released_when_it_ends(tmp_path):
    from frost.run.claims import claim as claim_run

    run = tmp_path / "claims" / "arm-seed0"
    mine = claim_run(run)
    assert mine is not None and claim_run(run) is None  # held (an flock per open file, so also within one process)
    assert json.loads(run.read_text())["pid"] == os.getpid()
    mine.close()
    code = "from pathlib import Path; from frost.run.claims import claim as claim_run; "
    code += f"c = claim_run(Path({str(run)!r}))\n"
    code += "print(c is not None, flush=True); import time; time.sleep(600)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    worker = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "True"
        assert claim_run(run) is None  # a live worker holds it
        worker.kill()  # a worker that dies holding a claim: the system releases it
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    again = claim_run(run)
    assert again is not None
    again.close()


def test_final_diagnostics_run_once_per_seed_and_are_summarized_over_seeds(tmp_path):
    """The `final` block: Appendix D of every arm against the reference and the selection experiment at every player
    (and the base model), each a real `frost diagnose` process, skipped once done; the summary's means over seeds are
    recomputed from the per-seed files, and a folder holds what the same `frost diagnose` command writes by hand."""
    out = tmp_path / "out"
    spec = {
        "out": str(out),
        "seeds": [0, 1],
        "set": {**COMMON, "train.steps": 2, "train.val_every": 2},
        "reference": "grpo",
        "arms": {
            "grpo": {"set": {"train.algorithm": "grpo"}},
            "frost": {"set": {"train.algorithm": "frost", "frost.rule": "judge-gated", "frost.D": 2}},
        },
        "final": {
            "samples": {"prompts": 2, "samples": 3},
            "selection": {"prompts": 2, "K": 2, "D": 2, "rules": ["taylor-gated", "judge-gated"]},
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    final = out / "final"
    assert sorted(p.name for p in (final / "samples").iterdir()) == ["frost-seed0", "frost-seed1"]
    assert sorted(p.name for p in (final / "selection").iterdir()) == ["base", "frost-seed0", "frost-seed1",
                                                                      "grpo-seed0", "grpo-seed1"]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())["final"]
    per_seed = [json.loads((final / "samples" / f"frost-seed{s}" / "samples.json").read_text()) for s in (0, 1)]
    assert [list(r["table1"]) for r in per_seed] == [["grpo-seed0", "frost-seed0"], ["grpo-seed1", "frost-seed1"]]
    frost = summary["samples"]["frost"]
    assert frost["seeds"] == [0, 1] and frost["table2"]["prompts"] == 4
    for side, label in (("reference", "grpo"), ("arm", "frost")):
        for key in ("best_of_k", "mean_reward", "entropy"):
            values = [r["table1"][f"{label}-seed{s}"][key] for s, r in zip((0, 1), per_seed, strict=True)]
            assert frost[side][key] == mean_ci(values)
    zero = sum(r["table2"]["b_zero_variance"] for r in per_seed)
    assert frost["table2"]["b_zero_variance"] == zero
    for player in ("grpo", "frost"):
        rows = [json.loads((final / "selection" / f"{player}-seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        for rule in ("taylor-gated", "judge-gated"):
            lifts = [next(e["lift"] for e in r if e["rule"] == rule) for r in rows]
            assert summary["selection"][player]["lift"][rule] == mean_ci(lifts)
    assert summary["selection"]["base"]["prompts"] == 2
    text = (out / "summary.md").read_text()
    assert "Appendix D at the final checkpoints" in text and "| base | - | 2 |" in text
    # the folder holds what the same command gives when a user types it
    by_hand = tmp_path / "by-hand"
    runs = out / "runs"
    pair = [str(runs / "grpo-seed1"), str(runs / "frost-seed1")]
    options = ["--prompts", "2", "--samples", "3", "--model", "qwen3-tiny-shape", "--device", "cpu"]
    assert main(["diagnose", "samples", *pair, *options, "--out", str(by_hand)]) == 0
    assert json.loads((by_hand / "samples.json").read_text()) == per_seed[1]
    # done: a second run starts nothing; other settings run afresh
    events = (out / "progress.jsonl").read_text().count('"diagnostic"')
    assert main(["experiment", str(path), "--no-progress"]) == 0  # another thread count is the same command
    assert (out / "progress.jsonl").read_text().count('"diagnostic"') == events
    spec["final"] = {"samples": {"prompts": 1, "samples": 3}}
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path), "--no-progress", "--threads", "1"]) == 0
    final = json.loads((out / "summary.json").read_text())["final"]
    assert final["samples"]["frost"]["table2"]["prompts"] == 2 and not final["selection"]  # only what is asked for


def test_a_stop_signal_during_a_final_diagnostic_pauses_and_the_same_command_finishes_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    spec = {
        "out": str(out),
        "seeds": [0],
        "set": {**COMMON, "train.steps": 1, "train.val_every": 1},
        "arms": {"grpo": {"set": {"train.algorithm": "grpo"}}},
        "final": {"selection": {"prompts": 2, "K": 2, "D": 1, "rules": ["judge-gated"]}},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "frost", "experiment", "--no-progress", "--threads", "1", str(path)]
    progress = out / "progress.jsonl"
    code, err = stop_when_logged(cmd, env, progress, '"diagnostic"')
    assert code == 130 and "paused" in err
    folders = sorted((out / "final" / "selection").iterdir())
    assert [f.name for f in folders] == ["grpo-seed0"] and not (folders[0] / "done.json").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    events = [json.loads(line) for line in progress.read_text().splitlines() if '"diagnostic"' in line]
    assert [(e["diagnostic"], e["status"]) for e in events] == [
        ("selection/grpo-seed0", "start"), ("selection/grpo-seed0", "start"), ("selection/grpo-seed0", "done"),
        ("selection/base", "start"), ("selection/base", "done"),
    ]  # fmt: skip
    rows = [json.loads(line) for line in (folders[0] / "rows.jsonl").read_text().splitlines()]
    assert sorted(r["prompt"] for r in rows) == [0, 1]  # each prompt once


def test_a_stop_signal_as_a_diagnostic_starts_pauses_before_the_child_starts(tmp_path):
    """The race the test above can lose on a loaded machine: SIGTERM right after the diagnostic's start is logged
    (here: while it is being logged) pauses the experiment (DiagnosticPaused) and starts no child; the handlers are
    restored afterwards."""
    from frost.analysis.experiment.final import DiagnosticPaused, _run

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(DiagnosticPaused, match="stopped by signal 15"):
        _run(["diagnose", "samples"], tmp_path / "log.txt", lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert not (tmp_path / "log.txt").exists()  # no child was started
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_shaded_interval_of_a_fraction_stays_between_0_and_1():
    from frost.analysis.experiment.plots import band

    assert band("zero", [0.02, 0.9], [0.1, 0.2]) == ([0.0, pytest.approx(0.7)], [pytest.approx(0.12), 1.0])
    assert band("best", [-190.0], [2.0]) == ([-192.0], [-188.0])  # unbounded: as computed


def test_final_diagnostics_skip_what_another_worker_holds_and_a_failure_is_one_line(tmp_path):
    from frost.analysis.experiment.final import is_done, run_diagnostics
    from frost.errors import FrostError
    from frost.run.claims import claim

    args = ["diagnose", "selection", "--prompts", "1", "--K", "2", "--D", "1", "--rules", "judge-gated",
            "--data", "handwritten", "--model", "qwen3-tiny-shape", "--device", "cpu"]  # fmt: skip
    notes: list[dict] = []
    held = claim(tmp_path / "claims" / "final-selection-a")
    assert held is not None
    run_diagnostics(tmp_path, [(Path("selection/a"), args)], notes.append, threads=1)
    assert notes == [] and not (tmp_path / "final" / "selection" / "a").exists()  # another worker's
    held.close()
    run_diagnostics(tmp_path, [(Path("selection/a"), args)], notes.append, threads=1)
    assert is_done(tmp_path / "final" / "selection" / "a", args)
    assert [n["status"] for n in notes] == ["start", "done"]
    bad = [*args[:8], "--rules", "nope", *args[10:]]
    with pytest.raises(
        FrostError, match=r"final\.selection b failed \(exit 2\): frost diagnose selection: error: .*nope"
    ):
        run_diagnostics(tmp_path, [(Path("selection/b"), bad)], notes.append, threads=1)
    assert not is_done(tmp_path / "final" / "selection" / "b", bad)


def test_the_matched_curve_compares_at_every_validation_step_of_the_reference(tmp_path):
    from frost.analysis.experiment.runner import Arm, Experiment, markdown, matched_curve, summarize

    # the reference spends 10 judge forwards a step, the arm 20: at the reference's step 2 (20 forwards) the arm's
    # last validation with no more forwards is its step 0 (its step 2 cost 40)
    _fake_run(tmp_path / "runs" / "ref-seed0", 10, {0: [-9.0, -9.0], 2: [-8.0, -8.0], 4: [-5.0, -6.0]})
    _fake_run(tmp_path / "runs" / "arm-seed0", 20, {0: [-9.0, -9.0], 2: [-4.0, -7.0], 4: [-1.0, -1.0]})
    experiment = Experiment(out=tmp_path, seeds=[0], arms=[Arm("ref", None), Arm("arm", None)], reference="ref")
    curve = matched_curve(experiment, experiment.arms[1])
    assert [c["reference_step"] for c in curve] == [0, 2, 4]
    assert [c["arm_steps"] for c in curve] == [[0], [0], [2]]
    assert [c["reference_judge_fwd"] for c in curve] == [0, 20, 40]
    # step 0: equal; ref step 2: arm step 0 (-9) - (-8) = -1 on both texts; ref step 4: arm step 2 (+1, -1)
    assert [c["mean"] for c in curve] == pytest.approx([0.0, -1.0, 0.0])
    assert matched_curve(experiment, experiment.arms[0]) == []  # the reference has no curve against itself
    text = markdown(summarize(experiment))
    assert "| arm | +0.00 | -1.00 | +0.00 |" in text
