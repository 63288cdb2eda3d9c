"""The README's Evidence tables are the summaries of the committed run logs: each `<!-- frost-experiment:NAME -->`
block is what `frost experiment experiments/NAME.yaml --summary-only --md README.md` writes now, so a table cannot
drift from the logs it claims to summarize (a new run committed without its README block fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frost.analysis.experiment.runner import load_experiment, markdown, summarize

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- frost-experiment:(\S+) -->\n(.*?)\n<!-- /frost-experiment:\1 -->", re.S)


def readme_blocks() -> dict[str, str]:
    """The README's generated experiment blocks: name -> body."""
    return dict(BLOCK.findall((ROOT / "README.md").read_text()))


def test_the_readme_shows_both_evidence_games():
    assert {"evidence3-infilling", "evidence3-title"} <= set(readme_blocks())


@pytest.mark.parametrize("name", sorted(readme_blocks()))
def test_a_readme_evidence_block_is_the_summary_of_the_committed_logs(name, monkeypatch):
    spec = ROOT / "experiments" / f"{name}.yaml"
    assert spec.exists(), f"README block {name} has no experiments/{name}.yaml"
    monkeypatch.chdir(ROOT)  # the files name their folders relative to the repository root
    assert readme_blocks()[name] == markdown(summarize(load_experiment(spec)))
