#!/usr/bin/env bash
# The GPU check (issue "The paper's scale on one GPU"): a Qwen3-14B-shaped model with random weights, every arm's
# step phases and memory against the plan, TRL's GRPOTrainer side by side, and the CUDA-vs-CPU consistency checks.
# Nothing is fetched; the code runs from this checkout. Extra arguments go to scripts/gpu_check.py (e.g. --quick,
# --shape qwen3-8b-shape, --no-trl).
#
# TRL and datasets are not dependencies of Frost; on a machine without a package index, carry their wheels in .whl/
# (made where pip works: `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform
# manylinux_2_28_x86_64 -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19`); they are
# installed into /tmp/site here before the check.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site"
fi
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec python3 scripts/gpu_check.py "$@"
