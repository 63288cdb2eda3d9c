"""The trained player leaves Frost: every checkpoint is a peft adapter, `frost export` writes a peft adapter or a
merged model folder that plain transformers loads in a fresh process, and `--checkpoint` plays a trained player in
`frost infill` and `frost score`; all against Frost's own loading of the same adapter, on a tiny random-weight model
(`qwen3-tiny-shape`, seeded, so every process builds the same base)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frost.cli import main
from frost.games import build_game
from frost.models import load_model
from frost.run.checkpoint import load_players, resolve_checkpoint, run_config
from frost.run.data import load_split

ROOT = Path(__file__).resolve().parents[1]
OLDER_RUN = ROOT / "tests" / "data" / "run-before-restructure"  # adapter.safetensors, no adapter_config.json
TINY = """model: {name: qwen3-tiny-shape, device: cpu}
lora: {rank: 4, alpha: 8}
optim: {lr: 0.05}
game: {move_length: 4}
data: {source: handwritten, validation_size: 2}
train: {K: 2, batch_size: 2, steps: 2, val_every: 0, checkpoint_every: 2}
"""
BEGIN, END = ["--begin", "Once upon a time there was a"], ["--end", " and she lived by the sea."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A two-step run whose large learning rate moves the player well away from its base."""
    root = tmp_path_factory.mktemp("export")
    (root / "tiny.yaml").write_text(TINY)
    argv = ["train", "--config", str(root / "tiny.yaml"), "--run-dir", str(root / "run"), "--no-progress"]
    assert main([*argv, "--threads", "1"]) == 0
    return root / "run"


def frost_player(run: Path) -> tuple[object, object, list[int]]:
    """Frost's own loading of the run's adapter, its base, and the prompt of the run's first validation text."""
    lm = load_model("qwen3-tiny-shape", device="cpu")
    config = run_config(run)
    game = build_game(config.game.kind, lm.tokenizer, config.game.params())
    prompt = list(load_split(config.data, game).validation[0].prompt_ids)
    return load_players([run], lm), lm, prompt


def greedy(model: object, prompt: list[int], length: int) -> list[int]:
    """`length` argmax tokens after `prompt`, one full forward per token (no cache: an independent decode)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(length):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))  # type: ignore[operator]
    return ids[len(prompt) :]


@pytest.mark.parametrize("where", ["checkpoint", "export", "older run folder"])
def test_an_adapter_loads_with_peft_as_frost_loads_it(trained, tmp_path, where):
    from peft import PeftModel

    run = OLDER_RUN if where == "older run folder" else trained
    folder = resolve_checkpoint(run)[1]
    if where != "checkpoint":
        folder = tmp_path / "adapter"
        assert main(["export", str(run), "--out", str(folder), "--threads", "1"]) == 0
        assert json.loads((folder / "frost-export.json").read_text())["merged"] is False
    player, _, prompt = frost_player(run)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        want = player(ids).logits
        with player.disable_adapter():
            base = player(ids).logits
        got = PeftModel.from_pretrained(load_model("qwen3-tiny-shape", device="cpu").model, folder)(ids).logits
    if where != "older run folder":  # that run trained one step at a small learning rate
        assert (want - base).abs().max() > 1e-2  # the adapter changes the player: the comparison has teeth
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_a_merged_export_generates_the_players_greedy_move_in_a_fresh_process(trained, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(trained), "--out", str(out), "--merge", "--threads", "1"]) == 0
    player, _, prompt = frost_player(trained)
    move = greedy(player, prompt, 6)
    with player.disable_adapter():
        assert greedy(player, prompt, 6) != move  # the base would play another move
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
        f"AutoTokenizer.from_pretrained({str(out)!r})\n"
        f"ids = torch.tensor([{prompt!r}])\n"
        "mask = torch.ones_like(ids)\n"
        "out = model.generate(ids, do_sample=False, max_new_tokens=6, min_new_tokens=6, attention_mask=mask)\n"
        "print(json.dumps(out[0, ids.shape[1]:].tolist()))\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == move


def test_export_refuses_a_folder_that_holds_files_unless_forced(trained, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", str(trained), "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and (out / "notes.txt").is_file()
    assert main(["export", str(trained), "--out", str(out), "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "adapter_config.json").is_file()
    shutil.rmtree(out)


def test_checkpoint_plays_the_trained_player_in_infill_and_score(trained, capsys):
    from frost.analysis.infill import Refinement, infill
    from frost.games.inputs import instance_from_options
    from frost.judge import Judge
    from frost.models import forbidden_token_mask

    common = [*BEGIN, *END, "--L", "4", "--threads", "1", "--json"]
    cold = ["--temperature", "0.05"]  # near the greedy moves, which the adapter changes (a near-uniform random base)
    runs = {}
    for name, extra in (("trained", ["--checkpoint", str(trained)]), ("base", ["--model", "qwen3-tiny-shape"])):
        assert main(["infill", *common, *cold, "--K", "3", "--rounds", "1", "--D", "2", "--seed", "5", *extra]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    player, lm, _ = frost_player(trained)
    game = build_game("infilling", lm.tokenizer, {"move_length": 4})
    inst = instance_from_options(game, 10**6, begin=BEGIN[1], end=END[1])
    forbidden = forbidden_token_mask(lm.tokenizer, player.get_input_embeddings().weight.shape[0], lm.device)
    want = infill(
        Judge(player, context=player.disable_adapter), player, inst,
        Refinement(K=3, rounds=1, rule="full-gated", D=2, temperature=0.05),
        forbidden=forbidden, generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert [m["ids"] for m in runs["trained"]["moves"]] == [m[: inst.content_length(m)] for m in want.moves.tolist()]
    assert [m["ids"] for m in runs["trained"]["moves"]] != [m["ids"] for m in runs["base"]["moves"]]
    move = ",".join(str(i) for i in runs["trained"]["moves"][0]["ids"])
    assert main(["score", *common, "--move-ids", move, "--checkpoint", str(trained), "--rule", "taylor-gated"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["reward"] == pytest.approx(runs["trained"]["moves"][0]["reward"], abs=1e-4)  # the judge: the base


def test_one_function_builds_the_player_over_the_base_and_the_judge_as_the_base(trained):
    """`run.checkpoint.player_and_judge`: with a checkpoint the adapter plays and the judge scores as the base (its
    rewards equal those of the base model without any adapter); without one the base is both."""
    from frost.games.inputs import instance_from_options
    from frost.run.checkpoint import player_and_judge

    lm = load_model("qwen3-tiny-shape", device="cpu")
    game = build_game("infilling", lm.tokenizer, {"move_length": 4})
    inst = instance_from_options(game, 10**6, begin=BEGIN[1], end=END[1])
    moves = torch.randint(5, 90, (3, 4), generator=torch.Generator().manual_seed(1))
    base_player, base_judge = player_and_judge(lm)
    assert base_player is lm.model
    want = base_judge.rewards(inst, moves)
    player, judge = player_and_judge(lm, trained)
    assert torch.allclose(judge.rewards(inst, moves), want, atol=1e-5)  # the judge: the base, adapter off
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), player.disable_adapter():
        off = player(ids).logits
    with torch.no_grad():
        moved = (player(ids).logits - off).abs().max()
    assert float(moved) > 1e-3  # the player: the adapter on


def test_refinement_checks_its_fields_and_names_unknown_ones():
    from frost.analysis.infill import Refinement
    from frost.errors import ConfigError

    assert Refinement.of(K=4, rule="judge-gated").group_settings().K == 4
    assert Refinement.of(Refinement(D=3), tau=0.01).D == 3
    for bad, field in (({"K": 0}, "K"), ({"rounds": -1}, "rounds"), ({"tau": 1.0}, "tau"), ({"rule": "best"}, "rule"),
                       ({"temperature": 0.0}, "temperature"), ({"Dee": 4}, "Dee")):  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            Refinement.of(**bad)
