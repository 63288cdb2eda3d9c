"""The README's Python API example runs as written (on the embedded model), so the public face cannot drift from the
code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "no python block under '## Python API'"
    return match.group(1)


@pytest.mark.embedded
def test_the_readme_python_api_example_runs(capsys):
    namespace: dict = {}
    exec(compile(python_api_example(), "README.md (Python API)", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "hit_rate" in printed[0]  # the record's summary, then the 8 moves as text
    assert namespace["grid"].shape[0] == 8 and namespace["record"].moves.shape[0] == 8
