#!/usr/bin/env bash
# The GPU check (issue "The paper's scale on one GPU"): a Qwen3-14B-shaped model with random weights, every arm's
# step phases and memory against the plan, and the CUDA-vs-CPU consistency checks. Nothing is fetched; the code runs
# from this checkout. Extra arguments go to scripts/gpu_check.py (e.g. --quick, --shape qwen3-8b-shape).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=src exec python3 scripts/gpu_check.py "$@"
