"""Generated Markdown blocks: replaced between their markers, appended when missing, text outside kept; `frost
experiment --md` writes its summary there."""

from __future__ import annotations

from pathlib import Path

from frost.cli import main
from frost.tools.mdblock import write_block


def test_a_block_is_replaced_between_its_markers_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# Title\n\nbefore\n<!-- k:a -->\nold\n<!-- /k:a -->\nafter\n<!-- k:b -->\nother\n<!-- /k:b -->\n")
    write_block(path, "k", "a", "new | table")
    assert path.read_text() == (
        "# Title\n\nbefore\n<!-- k:a -->\nnew | table\n<!-- /k:a -->\nafter\n<!-- k:b -->\nother\n<!-- /k:b -->\n"
    )
    write_block(path, "k", "c", "appended")
    assert path.read_text().endswith("<!-- /k:b -->\n\n<!-- k:c -->\nappended\n<!-- /k:c -->\n")
    fresh = tmp_path / "NEW.md"
    write_block(fresh, "k", "a", "x", new_file="# New\n")
    assert fresh.read_text() == "# New\n\n<!-- k:a -->\nx\n<!-- /k:a -->\n"


def test_experiment_summary_goes_into_a_markdown_block(tmp_path, capsys):
    import json

    from frost.analysis.experiment.runner import load_experiment, markdown, summarize

    out = tmp_path / "evidence"
    run = out / "runs" / "a-seed0"
    run.mkdir(parents=True)
    val = {"val/reward_mean": -3.0, "val/token_entropy": 0.1, "val/score_var": 0.0, "val/frac_zero_var": 0.0}
    rows = [{"step": 1, "reward": -3.0, "judge_fwd_seqs": 4, "time/step_s": 1.0}, {"step": 1, **val}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "evidence.yaml"
    spec.write_text(f"out: {out}\nseeds: [0]\narms:\n  a: {{}}\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- frost-experiment:evidence -->\nstale\n<!-- /frost-experiment:evidence -->\nend\n")
    assert main(["experiment", str(spec), "--summary-only", "--md", str(readme)]) == 0
    expected = markdown(summarize(load_experiment(spec)))
    assert (
        readme.read_text()
        == f"intro\n<!-- frost-experiment:evidence -->\n{expected}\n<!-- /frost-experiment:evidence -->\nend\n"
    )
    assert "| a | 1 | 1 |" in expected
    # A second file whose out folder has the same last name gets a block of its own, named by its file.
    other = tmp_path / "evidence-b.yaml"
    other.write_text(f"out: {out}\nseeds: [0]\narms:\n  a: {{}}\n")
    assert main(["experiment", str(other), "--summary-only", "--md", str(readme)]) == 0
    text = readme.read_text()
    assert text.count("<!-- frost-experiment:evidence -->") == 1
    assert text.count("<!-- frost-experiment:evidence-b -->") == 1
    assert text.startswith(f"intro\n<!-- frost-experiment:evidence -->\n{expected}\n")
    assert main(["experiment", str(spec), "--summary-only", "--md", str(tmp_path / "no" / "such" / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--md:" in err
    assert Path(tmp_path / "no").exists() is False
