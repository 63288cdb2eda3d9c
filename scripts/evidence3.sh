#!/bin/bash
# Run the evidence experiments (experiments/evidence3-*.yaml) in the background: two workers with one thread each
# (or EVIDENCE_WORKERS with EVIDENCE_THREADS each),
# from a worktree pinned at one commit (so later changes to main never alter a run halfway) and a venv of their own.
# The pin is the commit in results/evidence3/pin (committed with the results, so a later session on a new machine
# runs the same code), else this checkout's HEAD, which is then written there. Idempotent: it sets up what is missing,
# resumes every run from its checkpoint where this machine still has it, and starts again the runs it lost.
# Usage, from the repository root:  scripts/evidence3.sh [HH:MM]   (no training starts after HH:MM; a run's test
#                                       reading still follows it. Logs: /work/evidence3/worker-*.log)
#                                   scripts/evidence3.sh stop   (SIGTERM: each worker saves and pauses)
#                                   scripts/evidence3.sh sync   (copy the runs' logs, choices and test readings here)
#                                   scripts/evidence3.sh commit (sync, then commit what finished: scripts/evidence3_commit.py)
# EVIDENCE_WORKERS=1 EVIDENCE_THREADS=2 scripts/evidence3.sh [HH:MM]: one worker on both cores. Two workers give about
# 1.3x the steps per hour, so each run takes about 2/1.3 = 1.5x as long as one worker's; where a machine keeps nothing between
# sessions, a run must finish within one, so the last runs of a session (and the longer title runs) go faster alone.
set -eu
DIR=${EVIDENCE_DIR:-/work/evidence3}
WORKERS=${EVIDENCE_WORKERS:-2}
THREADS=${EVIDENCE_THREADS:-1}
VENV=${EVIDENCE_VENV:-/work/evidence-venv}
RESULTS=results/evidence3
if [ "${1:-}" = stop ]; then
    pkill -TERM -f "frost experiment ([^ ]*/)?experiments/evidence3-" || true
    exit 0
fi
if [ "${1:-}" = sync ]; then  # logs, choices and test readings into this checkout, to commit (no weights)
    [ -d "$RESULTS" ] && find "$RESULTS" -type l -delete  # links to chosen runs are copied again
    python3 -c "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], symlinks=True, dirs_exist_ok=True,
ignore=shutil.ignore_patterns('checkpoints', 'adapters', 'claims', 'tensorboard', '.link-*', '*.tmp-*', 'pin', '.seeded'))" \
        "$DIR/$RESULTS" "$RESULTS"
    exit 0
fi
if [ "${1:-}" = commit ]; then  # run after every run or reading that finishes: a machine may keep nothing but commits
    "$0" sync
    exec .venv/bin/python scripts/evidence3_commit.py
fi
until=()  # an absolute time, fixed now: a worker's later process (the next game's file) must not read HH:MM afresh
[ -n "${1:-}" ] && until=(--until "$(date -d "$1" +%Y-%m-%dT%H:%M)")
mkdir -p "$RESULTS"
[ -f "$RESULTS/pin" ] || git rev-parse HEAD > "$RESULTS/pin"
PIN=$(cat "$RESULTS/pin")
if [ ! -d "$DIR/src" ]; then
    git worktree prune
    git worktree add -f --detach "$DIR" "$PIN"
elif [ "$(git -C "$DIR" rev-parse HEAD)" != "$PIN" ]; then  # a new pin (its runs' logs and checkpoints stay)
    if pgrep -f "experiments/evidence3-" > /dev/null; then
        echo "$DIR is at $(git -C "$DIR" rev-parse --short HEAD), not the pin $PIN: scripts/evidence3.sh stop first" >&2
        exit 2
    fi
    git -C "$DIR" checkout -q -f --detach "$PIN"
fi
mkdir -p "$DIR/$RESULTS"
# This checkout's logs into the worktree, once: a run finished in an earlier session counts as finished (its last
# event is "done"), and a main run read on test is not trained again.
[ -f "$DIR/$RESULTS/.seeded" ] || { cp -a "$RESULTS/." "$DIR/$RESULTS/"; touch "$DIR/$RESULTS/.seeded"; }
if [ ! -x "$VENV/bin/python" ]; then
    make .venv
    cp -a .venv "$VENV"
fi
start_worker() {  # start_worker N GAME...: worker N runs each game's file in turn, stopping at a pause (exit 130)
    local worker=$1
    shift
    local pidfile="$DIR/worker-$worker.pid"
    if [ -f "$pidfile" ] && grep -aq "experiments/evidence3-" "/proc/$(cat "$pidfile")/cmdline" 2> /dev/null; then
        echo "worker $worker: running (pid $(cat "$pidfile"))"
        return
    fi
    (cd "$DIR" || exit 1; PYTHONPATH="$DIR/src" nohup bash -c 'python=$1 threads=$2 until=$3; shift 3; for game; do
            "$python" -m frost experiment "experiments/evidence3-$game.yaml" --threads $threads --no-progress $until \
                || exit $?
        done' worker "$VENV/bin/python" "$THREADS" "${until[*]:-}" "$@" >> "worker-$worker.log" 2>&1 < /dev/null &
        echo $! > "$pidfile") > /dev/null 2>&1 < /dev/null
    echo "worker $worker: started on $* at $(cut -c1-12 "$RESULTS/pin"), $THREADS thread(s) (log $DIR/worker-$worker.log)"
}
for worker in $(seq 1 "$WORKERS"); do
    # Workers start 30 s apart: at the pin, workers that build the tokenised-instance cache together can crash (one's
    # rename took the other's temporary file; fixed on main in 8b16a01), and the first builds it in about 10 s.
    [ "$worker" -gt 1 ] && sleep 30
    start_worker "$worker" infilling title
done
