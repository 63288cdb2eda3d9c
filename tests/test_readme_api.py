"""The README's Python API example runs as written (on the embedded model), so the public face cannot drift from the
code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_examples() -> list[str]:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "GRPOTrainer" not in b]
    assert len(blocks) == 2, "expected the one-call example, then the pieces' example, under '## Python API'"
    return blocks  # the TRL example needs TRL and a model: tests/test_trl.py runs its code


@pytest.mark.embedded
def test_the_readme_one_call_example_runs_and_what_it_prints_is_what_it_found(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the example's run folder goes here; its config path is the repository's
    (tmp_path / "configs").symlink_to(README.parent / "configs")
    namespace: dict = {}
    exec(compile(python_api_examples()[0], "README.md (Python API, one call)", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    found, result = namespace["found"], namespace["result"]
    assert len(printed) == 2 and printed[0].startswith(repr(found.best))
    assert found.reward == found.moves[0]["reward"] >= found.initial_best  # Frost rounds never make the best worse
    assert [m["reward"] for m in found.moves] == sorted((m["reward"] for m in found.moves), reverse=True)
    assert len(found.moves) == 4 and 1 <= len(found.rounds) <= 2
    assert result.step == 1 and [m["step"] for m in result.metrics] == [1]
    assert (tmp_path / "runs" / "api-example" / "metrics.jsonl").is_file() and result.validation == []


@pytest.mark.embedded
def test_the_readme_pieces_example_runs(capsys):
    namespace: dict = {}
    exec(compile(python_api_examples()[1], "README.md (Python API, pieces)", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "hit_rate" in printed[0]  # the record's summary, then the 8 moves as text
    assert namespace["grid"].shape[0] == 8 and namespace["record"].moves.shape[0] == 8
