"""The reference in docs/ stays true to the code: every option of every command (from the parser itself) is named in
that command's row of docs/commands.md, or among the common options below the table; and the MkDocs site builds
with warnings as errors (`make docs` runs the same build)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frost.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ROOT / "docs" / "commands.md"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, argparse.ArgumentParser]]:
    """(`frost CMD [SUB]`, its parser) for every command and subcommand."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, (*path, name))
                out += nested or [(" ".join(("frost", *path, name)), sub)]
    return out


def rows(text: str) -> dict[str, str]:
    """Each table row's text by the `frost ...` command its first cell names."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\| `(frost [a-z]+(?: [a-z]+)?)", line)
        if m:
            found[m.group(1)] = found.get(m.group(1), "") + line
    return found


def _names(option: str, text: str) -> bool:
    """Whether `text` names `option` (as a whole option, not as the start of a longer one)."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_every_option_of_every_command_is_in_its_row_or_among_the_common_options():
    text = COMMANDS.read_text()
    by_command = rows(text)
    common = text.split("Common options:", 1)[1]
    missing = []
    for name, parser in commands(build_parser()):
        row = next((v for k, v in by_command.items() if name == k or name.startswith(k + " ")), None)
        assert row is not None, f"{name} has no row in docs/commands.md"
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        missing += [f"{name} {o}" for o in options if not (_names(o, row) or _names(o, common))]
    assert not missing, missing


def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
