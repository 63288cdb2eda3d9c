"""`frost report` in a real browser: headless Chromium loads report.html, the embedded figures decode with a
non-zero size, and a screenshot of the page is not blank and shows the plots' coloured lines.

Needs Debian's `chromium` (`.ci/run` installs it). Without a browser this test fails; set FROST_SKIP_BROWSER=1 to
skip it instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from frost.analysis.report import write_report
from test_report import make_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--hide-scrollbars",
]
TIMEOUT_S = 120
CHECK_SCRIPT = """<script>
addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "frost-check";
  out.textContent = JSON.stringify([...document.images].map(
    (i) => [i.complete, i.naturalWidth, i.naturalHeight, i.offsetWidth, i.offsetHeight]));
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if os.environ.get("FROST_SKIP_BROWSER") == "1":
        pytest.skip("no chromium and FROST_SKIP_BROWSER=1")
    pytest.fail(
        f"no headless browser ({', '.join(BROWSERS)}) on PATH: install Debian's chromium "
        "(apt-get install chromium) or set FROST_SKIP_BROWSER=1 to skip this test",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    runs = [
        make_run(root / "g0", "grpo", 8, 0, [-10, -8, -7, -6]),
        make_run(root / "g1", "grpo", 8, 1, [-10, -6, -5, -5]),
        make_run(root / "f0", "frost", 4, 0, [-10, -5, -4, -3]),
        make_run(root / "f1", "frost", 4, 0, [-9, -6, -4, -2], move_length=16),
    ]
    return write_report(runs, root / "out")


def run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT_S} s")
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def test_report_figures_load_in_a_browser(browser, report, tmp_path):
    page = report.read_text()
    assert page.count("</body>") == 1
    checked = tmp_path / "report-checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    done = run_browser(
        browser, tmp_path / "profile", "--virtual-time-budget=5000", "--window-size=1280,2000", "--dump-dom",
        checked.as_uri(),
    )  # fmt: skip
    found = re.search(r'<pre id="frost-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the load-event check did not run; DOM dump starts:\n{done.stdout[:2000]}\n{done.stderr[-2000:]}"
    images = json.loads(found.group(1))
    assert len(images) == page.count("<img") >= 2
    for complete, width, height, shown_width, shown_height in images:
        assert complete and width > 0 and height > 0, f"an image did not decode: {images}"
        assert shown_width > 0 and shown_height > 0, f"an image was laid out with no size: {images}"


def test_report_screenshot_is_not_blank(browser, report, tmp_path):
    shot = tmp_path / "report.png"
    run_browser(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert shot.is_file() and shot.stat().st_size > 0, "chromium wrote no screenshot"
    rgb = imread(shot)[..., :3].astype(np.float64)
    assert rgb.shape[:2] == (2000, 1280)
    pixels = rgb.reshape(-1, 3)
    gray = pixels.mean(axis=1)
    assert gray.std() > 0.02, f"the screenshot is (nearly) one flat colour: grey std {gray.std():.4f}"
    bytes_ = (pixels * 255).round().astype(np.int64)
    packed = (bytes_[:, 0] << 16) | (bytes_[:, 1] << 8) | bytes_[:, 2]
    background = np.bincount(packed).argmax()
    differ = np.abs(bytes_ - [background >> 16, (background >> 8) & 255, background & 255]).max(axis=1) > 8
    assert differ.mean() > 0.01, f"only {differ.mean():.2%} of the screenshot differs from its background"
    # Text and table borders are black or grey; only the figures' plotted lines and envelopes are coloured.
    saturated = (pixels.max(axis=1) - pixels.min(axis=1)) > 0.25
    assert saturated.mean() > 0.001, f"no coloured plot lines in the screenshot ({saturated.mean():.3%} of pixels)"
