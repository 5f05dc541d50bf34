#!/usr/bin/env bash
# GPU evidence for issue 6 (max-fit search): the longest sequence (batch 1) and the largest batch
# (at the tier's first default sequence length) that train llama-3.1-8b without running out of
# memory, hf and unsloth, on an emulated tier (an H100 capped to the tier's memory and dtype).
#
# One command per tier, each under ~9 minutes on an H100 (no network), from the repository root
# with .gpu-site carried:
#   TIER=t4   bash scripts/gpu/fit.sh     # 15 GiB, fp16; batch search at seq 1024
#   TIER=a10g bash scripts/gpu/fit.sh     # 24 GB class, bf16; batch search at seq 2048
# `bench fit` seeds each search with `bench estimate --max-fit`, probes the estimate, steps out
# (x1.1, x1.2, ...) until one probe fits and one fails, then bisects once (seq, to ~5 %) or twice
# (batch). Every probe is a real training cell (1 warm-up + 1 timed step) appended to the results.
# It starts no probe after FIT_BUDGET_S seconds (default 420) and then exits 3: run the same
# command again; it resumes from /tmp/qb-work while the machine is warm, else from RESUME_DIR when
# set (a folder holding fit-<tier>-emulated.jsonl from the earlier command; RESUME_DIR=reports/results
# continues the committed file). Without either it starts afresh: a re-measurement at HEAD never
# quietly reuses the committed probes.
#
# Writes under $OUT (at most 5 files): fit-<tier>-emulated.jsonl (every probe),
# fit-<tier>-emulated.console.txt, fit-<tier>-emulated.logs/<backend>-llama-3.1-8b.log,
# max-fit-<tier>.md (this tier's table).
# Then, on the CPU machine:
#   cp <OUT>/fit-*-emulated.jsonl reports/results/            (and the .console.txt / .logs)
#   python -m bench fit --from-results reports/results/fit-t4-emulated.jsonl \
#       reports/results/fit-a10g-emulated.jsonl --out reports/max-fit.md
#   add the new files to the `bench estimate --validate` line of scripts/regen_reports.sh (as
#   --validate-on FILE to hold them out of the calibration), then bash scripts/regen_reports.sh
#   (the probes are measured cells too: the estimator is validated on them)
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160
OUT=${OUT:?set OUT to the output folder}
TIER=${TIER:-${1:-t4}}
MODEL=${MODEL:-llama-3.1-8b}
BACKENDS=${BACKENDS:-hf,unsloth}
BUDGET=${FIT_BUDGET_S:-420}
MAX_SEQ=${MAX_SEQ:-65536}
CACHE=${CACHE:-/tmp/qbcache}
NAME=fit-$TIER-emulated
WORK=/tmp/qb-work
mkdir -p "$OUT" "$WORK"
RES="$WORK/$NAME.jsonl"
if [ ! -f "$RES" ] && [ -f "${RESUME_DIR:-/nonexistent}/$NAME.jsonl" ]; then
    cp "$RESUME_DIR/$NAME.jsonl" "$RES"
fi
CONSOLE="$WORK/$NAME.console.txt"
say() { echo "== $(date +%T) $*" | tee -a "$CONSOLE"; }

say "host: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
say "bench fit --gpu-tier $TIER --model $MODEL --backend $BACKENDS (budget $BUDGET s)"
python3 -m bench fit --gpu-tier "$TIER" --model "$MODEL" --backend "$BACKENDS" --max-seq-len "$MAX_SEQ" \
    --results "$RES" --resume --time-budget "$BUDGET" --out "$WORK/max-fit-$TIER.md" --cache-dir "$CACHE" \
    --cell-timeout 300 --load-timeout 300 2>&1 | tee -a "$CONSOLE"
rc=${PIPESTATUS[0]}
say "bench fit exit code $rc (0 complete, 3 out of time: run again)"
[ -f "$RES" ] && cp "$RES" "$OUT/"
[ -f "$WORK/max-fit-$TIER.md" ] && cp "$WORK/max-fit-$TIER.md" "$OUT/"
if [ -d "$WORK/$NAME.logs" ]; then
    mkdir -p "$OUT/$NAME.logs" && cp "$WORK/$NAME.logs"/*.log "$OUT/$NAME.logs/" 2>/dev/null
fi
cp "$CONSOLE" "$OUT/"
exit 0
