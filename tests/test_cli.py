"""Command-line errors: exit code 2 and one line naming the field, before any model is loaded."""

from __future__ import annotations

import pytest

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
