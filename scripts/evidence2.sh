#!/bin/bash
# Run the second evidence experiment (experiments/evidence2-*.yaml) in the background, two workers with one thread
# each, from a worktree pinned at the commit that started it (so later changes to main never alter a run
# halfway) and a venv of its own. Idempotent: it sets up what is missing and resumes every run from its checkpoint.
# Usage, from the repository root:  scripts/evidence2.sh        (logs: /work/evidence2/worker-*.log)
#                                   scripts/evidence2.sh stop   (SIGTERM: each worker saves and pauses)
#                                   scripts/evidence2.sh sync   (copy the runs' logs here, to commit)
#                                   scripts/evidence2.sh test GAME   (the one test phase of GAME's file, once its
#                                       choices.json is complete and committed here; log /work/evidence2/test-GAME.log)
set -eu
PIN=971c92fd8c7225683019e4715061533abfd0a60a  # 63a00b4's code plus the title-exact files (branch evidence2-pin)
DIR=${EVIDENCE_DIR:-/work/evidence2}
VENV=${EVIDENCE_VENV:-/work/evidence-venv}
if [ "${1:-}" = stop ]; then
    pkill -TERM -f "frost experiment ([^ ]*/)?experiments/evidence2-" || true  # the workers and any test phase
    exit 0
fi
if [ "${1:-}" = sync ]; then  # the runs' logs and the choices into this checkout, to commit (no weights)
    [ -d results/evidence2 ] && find results/evidence2 -type l -delete  # links to chosen runs are copied again
    python3 -c "import shutil, sys; shutil.copytree(sys.argv[1], 'results/evidence2', symlinks=True, dirs_exist_ok=True,
ignore=shutil.ignore_patterns('checkpoints', 'adapters', 'claims', 'tensorboard', '.link-*', '*.tmp-*'))" \
        "$DIR/results/evidence2"
    exit 0
fi
if [ "${1:-}" = test ]; then
    # The test phase runs this checkout's code (a commit after fda114e: `frost evaluate` records every shown part), from
    # a worktree pinned at HEAD so that edits here never alter it halfway, in the runs' folder (the experiment's `out`
    # is relative to the working directory). It refuses unless this checkout's committed choices.json is complete and
    # is the one the runs hold: the choices are fixed in a commit before any test result exists.
    game=${2:?usage: scripts/evidence2.sh test infilling|title-exact}
    choices=results/evidence2/$game/choices.json
    [ -f "$choices" ] && python3 -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get('complete') else 1)" \
        "$choices" || { echo "test: $choices is not complete here; sync, and wait for every run" >&2; exit 2; }
    git diff --quiet HEAD -- "$choices" && git ls-files --error-unmatch "$choices" > /dev/null \
        || { echo "test: commit $choices first (git add -f $choices)" >&2; exit 2; }
    cmp -s "$choices" "$DIR/$choices" || { echo "test: $choices differs from $DIR/$choices; sync first" >&2; exit 2; }
    code=$DIR-test
    if [ "$(git -C "$code" rev-parse HEAD 2> /dev/null)" != "$(git rev-parse HEAD)" ]; then
        if pgrep -f "$code/experiments/evidence2-" > /dev/null; then
            echo "test: a test phase runs from $code at another commit; let it end (or stop it) first" >&2
            exit 2
        fi
        git worktree remove --force "$code" 2> /dev/null || rm -rf "$code"
        git worktree prune
        git worktree add --detach "$code" HEAD
    fi
    [ -x .venv/bin/python ] || make .venv
    python=$PWD/.venv/bin/python
    (cd "$DIR" && PYTHONPATH="$code/src" nohup "$python" -m frost experiment \
        "$code/experiments/evidence2-$game.yaml" --test --threads 1 --no-progress >> "test-$game.log" 2>&1 < /dev/null &) \
        > /dev/null 2>&1 < /dev/null
    echo "test phase of $game started from $(git rev-parse --short HEAD) (log $DIR/test-$game.log)"
    exit 0
fi
if [ ! -d "$DIR/src" ]; then
    git worktree prune
    git worktree add -f "$DIR" "$PIN"
elif [ "$(git -C "$DIR" rev-parse HEAD)" != "$PIN" ]; then  # a pin that only adds files (the code stays the runs')
    git -C "$DIR" diff --quiet HEAD "$PIN" -- src || { echo "the pin changes $DIR/src under running runs" >&2; exit 2; }
    git -C "$DIR" checkout -q --detach "$PIN"
fi
if [ ! -x "$VENV/bin/python" ]; then
    make .venv
    cp -a .venv "$VENV"
fi
# Two workers with one thread each, both on the infilling file's runs, then on the title-exact file's; the two share a
# file's runs through claims. (evidence2-title.yaml, the built-in at-most-10-token title, was stopped: see its
# successor's header.) A pid file per worker tells a restart which are still running.
start_worker() {  # start_worker N GAME...: worker N runs each game's file in turn, stopping at a pause (exit 130)
    local worker=$1
    shift
    local pidfile="$DIR/worker-$worker.pid"
    # alive, and the worker's loop (not a process that was given its pid after a restart)
    if [ -f "$pidfile" ] && grep -aq "experiments/evidence2-" "/proc/$(cat "$pidfile")/cmdline" 2> /dev/null; then
        echo "worker $worker: running (pid $(cat "$pidfile"))"
        return
    fi
    (cd "$DIR" || exit 1; PYTHONPATH="$DIR/src" nohup bash -c 'for game in "${@:2}"; do
            "$1" -m frost experiment "experiments/evidence2-$game.yaml" --threads 1 --no-progress || exit $?
        done' worker "$VENV/bin/python" "$@" >> "worker-$worker.log" 2>&1 < /dev/null &
        echo $! > "$pidfile") > /dev/null 2>&1 < /dev/null
    echo "worker $worker: started on $* (log $DIR/worker-$worker.log)"
}
start_worker 1 infilling title-exact
start_worker 2 infilling title-exact
