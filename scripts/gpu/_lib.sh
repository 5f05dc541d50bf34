# Sourced by the evidence scripts after _env.sh: logging, the time budget, one resumable `bench run`.
# Needs OUT (the folder results go to), PART, and optionally CACHE, EVIDENCE_BUDGET_S and RESUME_DIR (results
# files of an earlier command, e.g. copied into the carried .gpu-site/resume/: `bench run --resume` continues them).
OUT=${OUT:?set OUT to the output folder}
CACHE=${CACHE:-/tmp/qbcache}
BUDGET=${EVIDENCE_BUDGET_S:-560}
START=$SECONDS
WORK=${WORK:-/tmp/qb-work}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/evidence-$PART.console.txt"
COMMON=(--cache-dir "$CACHE" --cell-timeout 420 --load-timeout 420)
LOGS=()  # the worker-log folders (under $WORK) of the runs this part started: pack_logs packs these only

say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }
bench_run() {  # bench_run NAME LIMIT_S args...: one `bench run`, its console kept; stopped at LIMIT_S (resumable)
    local name=$1 limit=$2; shift 2
    if [ "$limit" -lt 30 ]; then  # `timeout 0` would mean no limit at all: a part out of time starts nothing
        say "not started (${limit} s left of the part's budget): bench run $* -> $name.jsonl"
        return 0
    fi
    say "bench run $* -> $name.jsonl (limit ${limit} s)"
    LOGS+=("$name.logs")
    local t0=$SECONDS
    if [ ! -f "$WORK/$name.jsonl" ] && [ -f "${RESUME_DIR:-/nonexistent}/$name.jsonl" ]; then
        cp "$RESUME_DIR/$name.jsonl" "$WORK/$name.jsonl" && say "continuing $RESUME_DIR/$name.jsonl"
    fi
    timeout --signal=INT "$limit" python3 -m bench run "${COMMON[@]}" --out "$WORK/$name.jsonl" --resume "$@" \
        > "$WORK/$name.console.txt" 2>&1
    local rc=$?
    say "exit code $rc after $((SECONDS - t0)) s wall"
    echo "wall_s=$((SECONDS - t0)) exit=$rc" >> "$WORK/$name.console.txt"
    cp "$WORK/$name.jsonl" "$WORK/$name.console.txt" "$OUT/" 2>/dev/null
}
checkpoint() {  # checkpoint MODEL: write its synthetic checkpoint once per machine
    local model=${1:-llama-3.1-8b}
    say "synthetic checkpoint $model"
    mkdir -p "$CACHE"  # parts side by side on two GPUs write one model's checkpoint once: the second waits
    MODEL=$model flock "$CACHE/.checkpoint-$model.lock" python3 - <<'PY' >> "$LOG" 2>&1
import os, time
from pathlib import Path
from bench.config.models import resolve_model
from bench.run.checkpoint import ensure_synthetic_checkpoint
t = time.time()
path, built = ensure_synthetic_checkpoint(resolve_model(os.environ["MODEL"]), cache_dir=Path(os.environ.get("CACHE", "/tmp/qbcache")), device="cuda")
print(f"checkpoint {path} built in {built:.1f} s ({time.time() - t:.1f} s)")
PY
}
checkpoints() {  # checkpoints MODEL...: several models' checkpoints written side by side (disk- more than GPU-bound)
    local m
    for m in "$@"; do checkpoint "$m" & done
    wait
}
pack_logs() {  # this part's worker logs (LOGS, and the dask part's scheduler / worker logs), not those of
    # other parts that share $WORK on a warm machine or beside it on the other GPU
    local have=() p
    for p in "${LOGS[@]}"; do [ -e "$WORK/$p" ] && have+=("$p"); done
    if [ "$PART" = dask ]; then for p in "$WORK"/dask-*.log; do [ -e "$p" ] && have+=("${p##*/}"); done; fi
    if [ ${#have[@]} -gt 0 ]; then tar czf "$OUT/logs-$PART.tgz" -C "$WORK" "${have[@]}"; fi
}
