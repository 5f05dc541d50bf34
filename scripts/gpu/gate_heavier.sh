#!/usr/bin/env bash
# GPU evidence for `bench gate` (issue 5): a genuine re-run that should pass, and a genuinely
# heavier recipe that should fail, both gated against the committed baseline baselines/t4.json
# (saved from reports/results/t4-emulated.jsonl with `bench baseline save`).
#
#   1. rerun:   the baseline's reference recipe again (hf-trl: TRL's SFTTrainer, what HF users run;
#               llama-3.1-8b, t4 emulated, seq 1024, batch 1,2, the default timed window as in the
#               baseline): same cell keys; gated on VRAM by scripts/gate_evidence.sh (and on speed, to
#               show how much tokens/s moves between two runs of one recipe).
#   2. heavier: the same cells with LoRA rank 64 instead of 16 - what a team does when it bumps
#               lora_r in its recipe. lora_r is part of the cell key, so the gate compares the two
#               recipes with --ignore-key lora_r (printed in the output); expected FAIL, naming the
#               cells (more VRAM; batch 2 already runs near the T4's memory in the baseline, so it
#               may now go over it or OOM).
#
# Run from the repository root on the GPU machine (no network), ~4 minutes:
#   bash scripts/gpu/gate_heavier.sh
# Writes under $OUT (6 files): t4-rerun.jsonl, t4-heavier-r64.jsonl (the results), gate-rerun.md,
# gate-fail.md, gate-fail.json (the gate's own output there), gate.log.
# Then, on the CPU machine: copy the two .jsonl files to reports/results/gate/ (a subfolder, so
# the main report's reports/results/*.jsonl does not pick up the rank-64 cells) and run
# `bash scripts/gate_evidence.sh`, which regenerates reports/gate-pass.md and reports/gate-fail.md.
set -uo pipefail
. scripts/gpu/_env.sh
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
BASELINE=${BASELINE:-baselines/t4.json}
CACHE=${CACHE:-/tmp/qbcache}
LOG="$OUT/gate.log"
WORK=$(mktemp -d /tmp/gate-heavier.XXXXXX)  # bench run also writes worker logs: keep them out of $OUT
MATRIX=(--gpu-tier t4 --model llama-3.1-8b --recipe hf-trl --seq-len 1024 --batch-size 1,2 --cache-dir "$CACHE")
SUBSET=(--only recipe=hf-trl --only seq_len=1024)
TOL=(--max-vram-increase 5% --max-slowdown 10%)

say() { echo "== $*" | tee -a "$LOG"; }

# The gate exits 2 when the two sides ran on different GPUs (say this session got an H200, the
# baseline an H100). Then it is run again with --allow-env-mismatch, which the markdown states.
gate() {  # gate NAME RESULTS extra-args...
    local name=$1 results=$2; shift 2
    local md="$OUT/$name.md"
    rm -f "$md"
    python3 -m bench gate "$results" --baseline "$BASELINE" "${SUBSET[@]}" "${TOL[@]}" "$@" \
        --summary-md "$md" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" = 2 ]; then
        say "$name: unusable input (exit 2); retrying with --allow-env-mismatch"
        python3 -m bench gate "$results" --baseline "$BASELINE" "${SUBSET[@]}" "${TOL[@]}" "$@" \
            --allow-env-mismatch --summary-md "$md" 2>&1 | tee -a "$LOG"
        rc=${PIPESTATUS[0]}
    fi
    say "$name: bench gate exit code $rc"
    return 0
}

say "host: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
say "baseline: $BASELINE"
test -f "$BASELINE" || { say "missing $BASELINE"; exit 1; }

say "1/2 rerun of the baseline recipe"
python3 -m bench run "${MATRIX[@]}" --out "$WORK/t4-rerun.jsonl" 2>&1 | tail -n 25 | tee -a "$LOG"
tail -n 5 "$WORK"/t4-rerun.logs/* >> "$LOG" 2>/dev/null
cp "$WORK/t4-rerun.jsonl" "$OUT/"
gate gate-rerun "$OUT/t4-rerun.jsonl"

say "2/2 heavier recipe: --lora-r 64"
python3 -m bench run "${MATRIX[@]}" --lora-r 64 --out "$WORK/t4-heavier-r64.jsonl" 2>&1 | tail -n 25 | tee -a "$LOG"
tail -n 5 "$WORK"/t4-heavier-r64.logs/* >> "$LOG" 2>/dev/null
cp "$WORK/t4-heavier-r64.jsonl" "$OUT/"
gate gate-fail "$OUT/t4-heavier-r64.jsonl" --ignore-key lora_r
python3 -m bench gate "$OUT/t4-heavier-r64.jsonl" --baseline "$BASELINE" "${SUBSET[@]}" "${TOL[@]}" \
    --ignore-key lora_r --allow-env-mismatch --json > "$OUT/gate-fail.json" 2>>"$LOG"
# The pytest plugin's CUDA path (vram_budget on real GPU tensors), where pytest is installed.
if python3 -c "import pytest" 2>/dev/null; then
    say "pytest plugin on the GPU: tests/integration/test_pytest_plugin.py -m gpu"
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/integration/test_pytest_plugin.py 2>&1 | tail -n 15 | tee -a "$LOG"
else
    say "pytest not importable here: GPU plugin tests not run"
fi
say "done: $(ls "$OUT" | tr '\n' ' ')"
