#!/usr/bin/env bash
# GPU evidence for issue 6 (VRAM estimator): measured peaks over sequence length and batch size,
# both backends, for `bench estimate --validate`.
#
# Two commands, each under ~8 minutes on an H100 80GB (no network), run from the repository root
# with .gpu-site carried:
#   PART=1 bash scripts/gpu/estimator_sweep.sh   # llama-3.1-8b, batch 1: hf seq 1k..32k (up to its
#                                                # OOM point), unsloth seq 4k..32k
#   PART=2 bash scripts/gpu/estimator_sweep.sh   # llama-3.1-8b seq 2048/8192 x batch 2/4, both
#                                                # backends; llama-3.2-1b seq 1k..32k, both backends
# Every cell is a real `bench run` cell on the native h100 tier with 1 warm-up + 1 timed step (the
# peak includes the optimizer states, allocated by the first step). Unsloth compiles its first
# two shapes per worker (see first_step_s in the records); later shapes reuse the dynamic graph.
#
# Writes under $OUT (at most 7 files): estimator-sweep-h100-partN.jsonl (the records),
# estimator-sweep-h100-partN.console.txt, estimator-sweep-h100-partN.logs/<backend>-<model>.log.
# A part that ran out of time says "incomplete": run it again. It resumes from
# /tmp/qb-work while the machine is still warm, else from the committed copy in reports/results/.
# Then, on the CPU machine:
#   cp <OUT>/estimator-sweep-h100-part*.jsonl reports/results/   (and the .console.txt / .logs)
#   add the new files to the `bench estimate --validate` line of scripts/regen_reports.sh (as
#   --validate-on FILE to hold them out of the calibration), then bash scripts/regen_reports.sh
#   python -m pytest tests/integration/test_estimate.py        # the bound, on every committed cell
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160
OUT=${OUT:?set OUT to the output folder}
PART=${PART:-1}
BUDGET=${SWEEP_BUDGET_S:-480}  # seconds; no bench run starts that would likely end past it
CACHE=${CACHE:-/tmp/qbcache}
NAME=estimator-sweep-h100-part$PART
WORK=/tmp/qb-work
mkdir -p "$OUT" "$WORK"
RES="$WORK/$NAME.jsonl"
if [ ! -f "$RES" ] && [ -f "${RESUME_DIR:-/nonexistent}/$NAME.jsonl" ]; then
    cp "$RESUME_DIR/$NAME.jsonl" "$RES"   # continue a part that ran out of time last call (RESUME_DIR=reports/results: the committed file)
fi
CONSOLE="$WORK/$NAME.console.txt"
START=$SECONDS
INCOMPLETE=0
COMMON=(--gpu-tier h100 --min-steps 1 --min-seconds 0 --warmup-steps 1 --no-fast-paths --cache-dir "$CACHE" --out "$RES" --resume
        --cell-timeout 300 --load-timeout 300)

say() { echo "== $(date +%T) $*" | tee -a "$CONSOLE"; }

sync_out() {
    [ -f "$RES" ] && cp "$RES" "$OUT/"
    cp "$CONSOLE" "$OUT/"
    if [ -d "$WORK/$NAME.logs" ]; then
        mkdir -p "$OUT/$NAME.logs" && cp "$WORK/$NAME.logs"/*.log "$OUT/$NAME.logs/" 2>/dev/null
    fi
}

run() {  # run NEEDED_SECONDS bench-run-args...: skip (and say so) when the budget cannot take it
    local need=$1; shift
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt "$need" ]; then
        say "not started (needs ~${need} s, ${left} s left): $*"
        INCOMPLETE=1
        return
    fi
    say "bench run $*"
    python3 -m bench run "${COMMON[@]}" "$@" >> "$CONSOLE" 2>&1
    say "exit code $? after $((SECONDS - START)) s"
    sync_out
}

say "host: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
say "part $PART, budget $BUDGET s, results $RES"
case "$PART" in
  1)
    # The 8B checkpoint is written once, by the first run (its load_s and worker log say how long).
    run 170 --model llama-3.1-8b --backend hf --seq-len 1024,2048,4096,8192,16384,24576,32768 --batch-size 1
    run 200 --model llama-3.1-8b --backend unsloth --seq-len 4096,8192,16384,32768 --batch-size 1
    ;;
  2)
    run 190 --model llama-3.1-8b --backend hf,unsloth --seq-len 2048,8192 --batch-size 2,4
    run 170 --model llama-3.2-1b --backend hf,unsloth --seq-len 1024,4096,16384,32768 --batch-size 1
    ;;
  *) echo "PART must be 1 or 2" >&2; exit 2 ;;
esac
sync_out
python3 -m bench estimate --validate "$RES" >> "$CONSOLE" 2>&1
cp "$CONSOLE" "$OUT/"
if [ "$INCOMPLETE" = 1 ]; then
    say "part $PART incomplete: run it again (it resumes)"
else
    say "part $PART complete in $((SECONDS - START)) s"
fi
tail -n 40 "$CONSOLE"
