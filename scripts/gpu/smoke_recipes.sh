#!/usr/bin/env bash
# GPU smoke test of the recipe paths the CPU cannot run (TRL's fused loss on CUDA, Liger, Unsloth's
# SFTTrainer, fp16 emulation with TRL's bf16 LoRA cast, --data with packing), on a small model.
# One command, about 5 minutes on an H200, from the repository root with .gpu-site carried (and
# .gpu-site/data/gsm8k-train-alpaca.json copied from ../shared/data):
#   QLORA_BENCH_COMMIT=$(git rev-parse HEAD) bash scripts/gpu/smoke_recipes.sh
# Writes under $OUT: smoke-*.jsonl (records), smoke.console.txt, smoke-logs.tgz (worker logs).
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160
OUT=${OUT:?set OUT to the output folder}
CACHE=${CACHE:-/tmp/qbcache}
BUDGET=${SMOKE_BUDGET_S:-500}
START=$SECONDS
LOG=$OUT/smoke.console.txt
COMMON=(--model llama-3.2-1b --min-steps 2 --min-seconds 0 --warmup-steps 1 --cache-dir "$CACHE" --cell-timeout 240 --load-timeout 240)

say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
run() {  # run NEEDED_S NAME bench-run-args...
    local need=$1 name=$2; shift 2
    if [ $((BUDGET - (SECONDS - START))) -lt "$need" ]; then say "not started (budget): $name"; return; fi
    say "bench run $* -> $name"
    python3 -m bench run "${COMMON[@]}" --out "$OUT/$name.jsonl" "$@" >> "$LOG" 2>&1
    say "exit code $? after $((SECONDS - START)) s"
}

say "host: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
run 200 smoke-native --gpu-tier h200 --recipe hf-trl,hf-liger,unsloth,unsloth-lora16 --seq-len 512 --batch-size 2
run 120 smoke-t4 --gpu-tier t4 --recipe hf-trl,unsloth --seq-len 512 --batch-size 2
run 120 smoke-data --gpu-tier h200 --recipe hf-trl,unsloth --seq-len 512 --batch-size 4 \
    --data .gpu-site/data/gsm8k-train-alpaca.json --packing
tar czf "$OUT/smoke-logs.tgz" "$OUT"/*.logs 2>/dev/null; rm -rf "$OUT"/*.logs
tail -n 60 "$LOG"
