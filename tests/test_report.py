"""`frost report`: grouping runs into methods, curves over seeds, the final table, a self-contained HTML file."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from frost.analysis.report import curves, final_table, load_run, write_report
from frost.cli import main


def make_run(path, algorithm, k, seed, best, move_length=8):
    path.mkdir(parents=True)
    config = {"train": {"algorithm": algorithm, "K": k, "seed": seed}, "frost": {"rule": "taylor-gated"},
              "game": {"move_length": move_length}}  # fmt: skip
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for step, value in enumerate(best):
        if step:
            lines.append({"step": step, "loss": 0.0, "judge_fwd_seqs": 32})
        lines.append({"step": step, "val/reward_mean": value - 5, "val/best_of_8": value, "val/token_entropy": 1.0,
                      "val/score_var": 2.0})  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def runs(tmp_path):
    return [
        make_run(tmp_path / "g0", "grpo", 8, 0, [-10, -8, -7]),
        make_run(tmp_path / "g1", "grpo", 8, 1, [-10, -6, -5]),
        make_run(tmp_path / "f0", "frost", 4, 0, [-10, -5, -4]),
    ]


def test_runs_group_into_methods_with_seed_statistics(runs):
    loaded = [load_run(p) for p in runs]
    assert [r.method for r in loaded] == ["GRPO K=8", "GRPO K=8", "Frost K=4, taylor-gated"]
    c = curves(loaded, "val/best_of_8")
    assert c["GRPO K=8"]["mean"] == [-10, -7, -6] and c["GRPO K=8"]["min"] == [-10, -8, -7]
    assert curves(loaded, "val/best_of_8", x_axis="judge_forwards")["GRPO K=8"]["x"] == [0, 32, 64]
    table = final_table(loaded)
    assert table[0]["val/best_of_8"] == {"mean": -6, "min": -7, "max": -5} and table[0]["seeds"] == 2


def test_html_report_is_self_contained_with_figures(runs, tmp_path):
    path = write_report(runs, tmp_path / "out")
    page = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert 'src="http' not in page and "<script" not in page  # nothing to fetch
    assert "GRPO K=8" in page and (tmp_path / "out" / "final.md").is_file()


def test_report_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
