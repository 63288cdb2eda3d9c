"""The layout stays the one `.importlinter` checks and the README describes: every module at the top level of
`src/frost` is one of the algorithm's, named in the contract that keeps the wings out of it; and no function or class
grows past the sizes a reader can take in at once, except the ones listed here with their reason."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "frost"
NOT_ALGORITHM = {"__init__", "__main__", "cli"}
"""The package's face and the command line: above everything, not part of the algorithm."""
MAX_FUNCTION, MAX_CLASS = 100, 300
LONGER: dict[str, str] = {}
"""Functions and classes over the limits today, each with its reason; the test fails when one is added or fixed."""


def test_every_top_level_module_is_one_the_contracts_keep_free_of_the_wings():
    contracts = configparser.ConfigParser()
    contracts.read(ROOT / ".importlinter")
    listed = set(contracts["importlinter:contract:algorithm-imports-no-wing"]["source_modules"].split())
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    top = {f"frost.{m}" for m in modules - NOT_ALGORITHM - {"run", "analysis", "tools", "integrations"}}
    assert top == listed, (top - listed, listed - top)


def test_no_function_or_class_is_longer_than_a_reader_takes_in_except_those_listed():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).with_suffix("").as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "end_lineno") else 0
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and size > limit:
                found[f"{where}.{node.name}"] = size
    assert set(found) == set(LONGER), {k: found.get(k) for k in set(found) ^ set(LONGER)}


def public_definitions(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """A module's public functions and classes, and the public methods of its public classes (nested helpers and
    private names are the reader's business inside one body)."""
    found: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            found.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                found += [
                    (f"{node.name}.{m.name}", m)
                    for m in node.body
                    if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
                ]
    return found


def test_every_public_function_class_and_method_has_a_docstring():
    missing = [
        f"{path.relative_to(PACKAGE).as_posix()}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, node in public_definitions(ast.parse(path.read_text()))
        if ast.get_docstring(node) is None  # type: ignore[arg-type]
    ]
    assert not missing, missing


def test_the_docstring_check_sees_a_missing_docstring():
    tree = ast.parse('def f():\n    return 1\n\nclass C:\n    """C."""\n\n    def m(self):\n        pass\n')
    assert [name for name, node in public_definitions(tree) if ast.get_docstring(node) is None] == ["f", "C.m"]
