"""The wheel carries what an installed Frost needs: built from the repository (`pip wheel`, what `python -m build`
makes), installed into a folder of its own, and run from outside the source tree, `frost score` works on the
embedded model (the dependencies come from the test's environment; the package, its story set and assets from the
wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.embedded
def test_the_installed_wheel_scores_a_move_on_the_embedded_model(tmp_path):
    wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)  # a copy: building writes build/ beside the source
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("frost_training-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = {"frost/assets/stories.jsonl", "frost/assets/handwritten_stories.jsonl", "frost/py.typed"}
    assert assets <= names and "frost/cli/__main__.py" in names and "frost/integrations/trl.py" in names
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    code = (
        "import frost, runpy, sys; print(frost.__file__, file=sys.stderr); "
        "sys.argv = ['frost', 'score', '--begin', 'Once upon a time', '--end', ' a cat.', '--move', ' there was', "
        "'--top', '2', '--json', '--threads', '1']; runpy.run_module('frost', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.splitlines()[0].startswith(str(target))  # the installed copy ran, not the source tree
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rule"] == "taylor" and len(out["edits"]) == 2 and out["reward"] < 0
