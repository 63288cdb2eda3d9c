"""The bad-input matrix: every command and config section with the mistakes users make, each one line and exit 2.

`FROST_WRITE_MATRIX=1 pytest tests/test_bad_input_matrix.py` also writes the table in docs/bad-input.md from what
the commands actually printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from frost.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["--begin", "Once upon a time", "--end", " there was a cat."]
TRAIN = ["train", "--steps", "1", "--no-progress"]
TINY = ["train", "--config", "{tiny.yaml}", "--no-progress", "--threads", "1"]
TINY_CONFIG = """model: {name: qwen3-tiny-shape, device: cpu}
lora: {rank: 4, alpha: 8}
game: {move_length: 3}
data: {source: handwritten, validation_size: 2}
train: {K: 2, batch_size: 2, steps: 1, val_every: 0, checkpoint_every: 1}
"""
ROWS: list[tuple[str, str, str]] = []


def files(tmp: Path) -> dict[str, str]:
    """The files the cases point at."""
    (tmp / "not-a-model").mkdir(exist_ok=True)
    (tmp / "not-a-model" / "notes.txt").write_text("hello")
    (tmp / "unknown-key.yaml").write_text("train: {K: 4, colour: red}\n")
    (tmp / "not-yaml.yaml").write_text("train: {K: [\n")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp / "docs.csv").write_text("a,b\n")
    (tmp / "no-move.yaml").write_text(
        "name: bad\nmove: {length: 4}\nplayer: 'Write {move_length} tokens'\njudge: [{start: true}, {doc: [0, 8], "
        "scored: true}]\n"
    )
    (tmp / "bad-experiment.yaml").write_text("out: x\narms: {}\n")
    (tmp / "bad-final.yaml").write_text("out: x\narms: {a: {}}\nfinal: {selection: {K: 4, Dee: 4}}\n")
    (tmp / "empty-run").mkdir(exist_ok=True)
    (tmp / "one-value-grid.yaml").write_text("out: x\narms: {a: {}}\ngrid: {field: optim.lr, values: [0.1]}\n")
    (tmp / "no-baselines.yaml").write_text("out: x\narms: {a: {}}\ntest: {samples: 8}\n")
    (tmp / "test-when.yaml").write_text("out: x\narms: {a: {}}\nbaselines: [a]\ntest: {samples: 8, when: later}\n")
    return {k: str(tmp / k) for k in ("not-a-model", "unknown-key.yaml", "not-yaml.yaml", "empty.jsonl",
                                       "binary.jsonl", "docs.csv", "no-move.yaml", "bad-experiment.yaml",
                                       "bad-final.yaml", "empty-run", "one-value-grid.yaml",
                                       "no-baselines.yaml", "test-when.yaml")}  # fmt: skip


CASES: list[tuple[str, list[str], str]] = [
    ("score: empty move", ["score", *PAIR, "--move", ""], "--move"),
    ("score: empty move ids", ["score", *PAIR, "--move-ids", ""], "--move-ids"),
    ("score: move ids not numbers", ["score", *PAIR, "--move-ids", "1,x"], "--move-ids"),
    ("score: unknown Taylor mode", ["score", *PAIR, "--move", " hi", "--mode", "second-order"], "mode"),
    ("score: gate above 1", ["score", *PAIR, "--move", " hi", "--tau", "1.5"], "--tau"),
    ("score: gate of 0", ["score", *PAIR, "--move", " hi", "--tau", "0"], "--tau"),
    ("score: negative --top", ["score", *PAIR, "--move", " hi", "--top", "-1"], "--top"),
    ("score: no move at all", ["score", *PAIR], "--move"),
    (
        "score: a folder that is not a model",
        ["score", *PAIR, "--move", " hi", "--model", "{not-a-model}"],
        "not a loadable model",
    ),
    (
        "score: a CUDA device that is not there",
        ["score", *PAIR, "--move", " hi", "--device", "cuda:7"],
        "model.device",
    ),
    ("score: an unknown device kind", ["score", *PAIR, "--move", " hi", "--device", "tpu"], "model.device"),
    ("score: unknown dtype", ["score", *PAIR, "--move", " hi", "--dtype", "int4"], "model.dtype"),
    ("score: unknown game", ["score", "--game", "chess", "--doc", "a", "--move", " b"], "game"),
    ("infill: move length 0", ["infill", *PAIR, "--L", "0"], "--L"),
    ("infill: group size 0", ["infill", *PAIR, "--K", "0"], "--K"),
    ("infill: gate of 1", ["infill", *PAIR, "--tau", "1"], "tau"),
    ("infill: unknown rule", ["infill", *PAIR, "--rule", "best"], "frost.rule"),
    ("infill: a move longer than the model's context", ["infill", *PAIR, "--L", "9000", "--K", "2"], "context"),
    ("diagnose selection: D not numbers", ["diagnose", "selection", "--D", "1,a"], "--D"),
    ("diagnose selection: unknown rule", ["diagnose", "selection", "--rules", "taylor,nope"], "frost.rule"),
    ("diagnose selection: gate above 1", ["diagnose", "selection", "--tau", "1e-4,2"], "tau"),
    ("diagnose selection: unknown ranking", ["diagnose", "selection", "--rank-by", "gain"], "rank_by"),
    ("diagnose selection: K not numbers", ["diagnose", "selection", "--K", "4,x"], "--K"),
    ("diagnose selection: K of 0", ["diagnose", "selection", "--K", "0"], "--K"),
    (
        "diagnose selection: checkpoint that is not there",
        ["diagnose", "selection", "--checkpoint", "nowhere"],
        "nowhere",
    ),
    ("diagnose samples: runs that are not there", ["diagnose", "samples", "nowhere-a", "nowhere-b"], "nowhere-a"),
    ("train: config file missing", [*TRAIN, "--config", "missing.yaml"], "--config"),
    ("train: config not YAML", [*TRAIN, "--config", "{not-yaml.yaml}"], "--config"),
    ("train: unknown config key", [*TRAIN, "--config", "{unknown-key.yaml}"], "colour"),
    ("train: K of 0", [*TRAIN, "--set", "train.K=0"], "train.K"),
    ("train: K not a number", [*TRAIN, "--set", "train.K=four"], "train.K"),
    ("train: learning rate NaN", [*TRAIN, "--set", "optim.lr=.nan"], "optim.lr"),
    ("train: negative KL coefficient", [*TRAIN, "--set", "train.beta=-1"], "train.beta"),
    ("train: temperature 0", [*TRAIN, "--set", "train.temperature=0"], "train.temperature"),
    ("train: one beta for AdamW", [*TRAIN, "--set", "optim.betas=[0.9]"], "optim.betas"),
    ("train: unknown rule", [*TRAIN, "--set", "frost.rule=nope"], "frost.rule"),
    ("train: gate above 1", [*TRAIN, "--set", "frost.tau=2"], "tau"),
    ("train: unknown ranking", [*TRAIN, "--set", "frost.rank_by=gain"], "rank_by"),
    ("train: unknown algorithm", [*TRAIN, "--set", "train.algorithm=ppo"], "train.algorithm"),
    ("train: unknown game", [*TRAIN, "--game", "chess"], "game"),
    (
        "train: a title length rule that is not a boolean",
        [*TRAIN, "--game", "title", "--set", "game.exact_length=3"],
        "game.exact_length",
    ),
    ("train: a length rule infilling does not have", [*TRAIN, "--set", "game.exact_length=true"], "game.exact_length"),
    ("train: game file without a move", [*TRAIN, "--game", "{no-move.yaml}"], "no move part"),
    ("train: LoRA rank 0", [*TRAIN, "--set", "lora.rank=0"], "lora.rank"),
    ("train: LoRA dropout 1.5", [*TRAIN, "--set", "lora.dropout=1.5"], "lora.dropout"),
    ("train: negative micro-batch", [*TRAIN, "--set", "train.micro_batch=-1"], "train.micro_batch"),
    ("train: max_skipped_steps 0", [*TRAIN, "--set", "train.max_skipped_steps=0"], "train.max_skipped_steps"),
    ("train: unknown advantage", [*TRAIN, "--set", "train.advantage=median"], "train.advantage"),
    (
        "train: pass@k advantage with K=1",
        [*TRAIN, "--set", "train.advantage=passk", "--set", "train.K=1"],
        "train.advantage",
    ),
    ("train: unknown loss", [*TRAIN, "--set", "train.loss=ppo"], "train.loss"),
    ("train: epochs 0", [*TRAIN, "--set", "train.epochs=0"], "train.epochs"),
    ("train: epochs 2 without ppo-clip", [*TRAIN, "--set", "train.epochs=2"], "train.epochs"),
    ("train: clip_low of 1", [*TRAIN, "--set", "train.clip_low=1"], "train.clip_low"),
    ("train: negative clip_high", [*TRAIN, "--set", "train.clip_high=-0.2"], "train.clip_high"),
    ("train: Frost rounds 0", [*TRAIN, "--set", "frost.rounds=0"], "frost.rounds"),
    ("train: judge batch 0", [*TRAIN, "--set", "model.judge_batch_size=0"], "model.judge_batch_size"),
    ("train: FSDP shards 0", [*TRAIN, "--set", "model.fsdp_shards=0"], "model.fsdp_shards"),
    ("train: FSDP over 2 ranks in one process", [*TINY, "--set", "model.fsdp_shards=2"], "model.fsdp_shards"),
    (
        "train: FSDP with a separate judge",
        [*TRAIN, "--set", "model.fsdp_shards=2", "--set", "model.judge=embedded"],
        "model.fsdp_shards",
    ),
    ("train: a CUDA device that is not there", [*TRAIN, "--set", "model.device=cuda:7"], "model.device"),
    ("train: resume a run that has no checkpoint", [*TRAIN, "--resume", "--run-dir", "{empty-run}"], "--resume"),
    ("train: data file missing", [*TRAIN, "--set", "data.source=missing.jsonl"], "missing.jsonl"),
    ("train: empty data file", [*TRAIN, "--set", "data.source={empty.jsonl}"], "is empty"),
    ("train: binary data file", [*TRAIN, "--set", "data.source={binary.jsonl}"], "binary.jsonl"),
    ("train: data of an unknown type", [*TRAIN, "--set", "data.source={docs.csv}"], "unknown type"),
    ("data inspect: file missing", ["data", "inspect", "missing.jsonl"], "missing.jsonl"),
    ("data inspect: empty file", ["data", "inspect", "{empty.jsonl}"], "is empty"),
    ("bench: unknown shape", ["bench", "--only", "core", "--model", "qwen9-shape", "--repeats", "1"], "qwen9-shape"),
    ("bench: FSDP outside the step bench", ["bench", "--only", "core", "--fsdp-shards", "2"], "--fsdp-shards"),
    ("bench: unknown rule", ["bench", "--only", "steps", "--rules", "nope"], "frost.rule"),
    ("report: run that is not there", ["report", "nowhere"], "nowhere"),
    ("experiment: file missing", ["experiment", "missing.yaml"], "does not exist"),
    ("experiment: no arms", ["experiment", "{bad-experiment.yaml}"], "experiment.arms"),
    ("experiment: unknown option of a final diagnostic", ["experiment", "{bad-final.yaml}"], "final.selection"),
    ("experiment: --md in a folder that is not there", ["experiment", "missing.yaml", "--md", "no/x.md"], "--md"),
    (
        "train: a judge with another tokenizer",
        [*TINY, "--set", "model.judge={other-tokenizer-model}"],
        "model.judge",
    ),
    (
        "train: resume with another LoRA shape",
        [*TINY, "--run-dir", "{tiny-run}", "--resume", "--steps", "2", "--set", "lora.rank=8"],
        "LoRA shape",
    ),
    (
        "train: resume with another model",
        [*TINY, "--run-dir", "{tiny-run}", "--resume", "--steps", "2", "--set", "model.name=embedded"],
        "another model",
    ),
    ("train: a run folder that holds a run", [*TINY, "--run-dir", "{tiny-run}"], "--resume"),
    ("train: --resume and --overwrite together", [*TINY, "--resume", "--overwrite"], "--overwrite"),
    ("train: documents too short for the game", [*TINY, "--set", "data.source={short.jsonl}"], "data.source"),
    (
        "diagnose samples: runs of another model",
        ["diagnose", "samples", "{tiny-run}", "{tiny-run}", "--model", "embedded"],
        "another model",
    ),
    ("evaluate: a run without a test split", ["evaluate", "{tiny-run}", "--out", "o"], "data.test_size"),
    ("evaluate: an unknown split", ["evaluate", "{tiny-run}", "--split", "dev", "--out", "o"], "--split"),
    ("evaluate: a folder that is not a run", ["evaluate", "{empty-run}", "--out", "o"], "neither a run folder"),
    ("evaluate: --record file missing", ["evaluate", "{tiny-run}", "--record", "no.json", "--out", "o"], "--record"),
    ("experiment: a grid of one value", ["experiment", "{one-value-grid.yaml}"], "experiment.grid.values"),
    ("experiment: a test block without baselines", ["experiment", "{no-baselines.yaml}"], "experiment.test"),
    ("experiment: a test read at an unknown time", ["experiment", "{test-when.yaml}"], "experiment.test.when"),
    ("experiment: --until that is not a time", ["experiment", "{no-baselines.yaml}", "--until", "soon"], "--until"),
    ("diagnose rounds: 0 rounds", ["diagnose", "rounds", "--rounds", "0"], "--rounds"),
    ("diagnose rounds: unknown rule", ["diagnose", "rounds", "--rules", "best"], "frost.rule"),
    ("export: a folder that holds files", ["export", "{tiny-run}", "--out", "{not-a-model}"], "--out"),
    ("export: a folder that is not a run", ["export", "{empty-run}", "--out", "o"], "neither a run folder"),
    ("infill: a checkpoint that is not there", ["infill", *PAIR, "--checkpoint", "nowhere"], "nowhere"),
    ("score: a rule that does not estimate rewards", ["score", *PAIR, "--move", " hi", "--rule", "topprob"], "--rule"),
    ("bench: negative --frost-D", ["bench", "--only", "options", "--frost-D", "-1"], "--frost-D"),
    (
        "train: a model too big for this machine's memory",
        [*TRAIN, "--model", "qwen3-14b-shape", "--device", "cpu"],
        "model.name",
    ),
]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny random-weight run with a checkpoint, its config, a model folder whose tokenizer has one more token,
    and documents too short for the infilling game (made once)."""
    from frost.models import load_model

    tmp = tmp_path_factory.mktemp("tiny")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG)
    assert main(["train", "--config", str(tmp / "tiny.yaml"), "--run-dir", str(tmp / "tiny-run"), "--no-progress"]) == 0
    other = load_model("qwen3-tiny-shape", device="cpu")
    other.model.save_pretrained(tmp / "other-tokenizer-model")
    other.tokenizer.add_tokens(["<frost-extra-token>"])
    other.tokenizer.save_pretrained(tmp / "other-tokenizer-model")
    (tmp / "short.jsonl").write_text('{"text": "Hi."}\n{"text": "No way."}\n')
    return {p.name: p for p in tmp.iterdir()}


@pytest.mark.parametrize(("name", "argv", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, tiny_files, name, argv, field):
    paths = files(tmp_path)
    for key, path in tiny_files.items():
        if any("{" + key + "}" in a for a in argv):
            paths[key] = str(tmp_path / key)
            (shutil.copytree if path.is_dir() else shutil.copy)(path, tmp_path / key)
    monkeypatch.chdir(tmp_path)
    for key, path in paths.items():
        argv = [a.replace("{" + key + "}", path) for a in argv]
    if "train" in argv and "--run-dir" not in argv:
        argv += ["--run-dir", str(tmp_path / "run")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from the parser
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1, err
    assert field in err[0], err[0]
    assert "Traceback" not in err[0]
    ROWS.append((name, " ".join(a if " " not in a else repr(a) for a in argv).replace(str(tmp_path) + "/", ""),
                 err[0].replace(str(tmp_path) + "/", "")))  # fmt: skip


def test_zz_write_the_matrix():
    """Writes docs/bad-input.md when FROST_WRITE_MATRIX=1 (after the cases above have run)."""
    if not os.environ.get("FROST_WRITE_MATRIX"):
        pytest.skip("set FROST_WRITE_MATRIX=1 to rewrite docs/bad-input.md")
    assert len(ROWS) == len(CASES)
    lines = [
        "# Bad input: one line, exit 2",
        "",
        "Written by `FROST_WRITE_MATRIX=1 pytest tests/test_bad_input_matrix.py` from what each command printed (each",
        "row is a test in `make test`). Paths are relative to the test's folder.",
        "",
        "| # | mistake | command | the one line (stderr) |",
        "|---:|---|---|---|",
    ]
    for n, (name, cmd, line) in enumerate(ROWS, 1):
        lines.append(f"| {n} | {name} | `frost {cmd}` | {line.replace('|', '/')} |")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "bad-input.md").write_text("\n".join(lines) + "\n")
