#!/usr/bin/env bash
# tests/test_report_browser.py opens report.html in headless Chromium. When no browser is on PATH, install Debian's
# `chromium` package (as root, or through sudo). If that is impossible, warn and go on: the browser test then fails
# with a one-line message (it skips only when FROST_SKIP_BROWSER=1).
set -uo pipefail
for browser in chromium chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null 2>&1; then exit 0; fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
if command -v apt-get >/dev/null 2>&1 &&
  $SUDO apt-get update -qq &&
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  exit 0
fi
echo "WARNING: could not install Debian's chromium (apt-get install chromium);" \
  "tests/test_report_browser.py will fail unless FROST_SKIP_BROWSER=1" >&2
exit 0
