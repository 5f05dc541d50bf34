#!/usr/bin/env bash
# GPU evidence for the report's claims check (issue 3): the cells the published claims need that the
# default matrices do not measure. Each PART is one `bench run` group that fits in one ~9-minute
# command on an H100 80GB (no network); run the parts you want, one command each:
#
#   bash scripts/gpu/report_claims.sh sizes      # ~5 min  h100 native, llama-3.1-8b s2048 b1,4,8 (hf+unsloth)
#                                                #         -> S7 (b1/b4/b8), S5-memory (s2048 b1 on t4 and h100),
#                                                #            more native pairs for S1-speed / S3-speed
#   bash scripts/gpu/report_claims.sh variants   # ~6 min  h100 native, llama-3.1-8b s2048 b2:
#                                                #         checkpointing none (hf+unsloth)      -> M1, M2-standard-*
#                                                #         unsloth with standard checkpointing  -> M2-unsloth
#                                                #         optimizer adamw_torch (hf+unsloth)   -> M5
#   bash scripts/gpu/report_claims.sh l4         # ~4 min  l4 emulated, mistral-7b-v0.3 s2048 b2 grad-accum 4
#                                                #         (hf+unsloth) -> S4-fit, S4-memory
#   bash scripts/gpu/report_claims.sh s7-mistral # ~4 min  h100 native, unsloth only, s2048 b1,2,4,8 -> S7
#   bash scripts/gpu/report_claims.sh s7-qwen    # ~4 min  (qwen2.5-7b)
#   bash scripts/gpu/report_claims.sh s7-phi     # ~4 min  (phi-3-mini)
#
# Every run uses the settings of the committed evidence (steps 4 and no minimum seconds, warm-up 2, adamw_8bit, r 16,
# alpha 16, seed 1234), so the claims check can pair a variant with the committed cell it differs from
# in one setting only. Writes under $OUT: claims-<part>.jsonl (the results), claims-<part>.console.txt
# and claims-<part>.log (worker log tails). Then, on the CPU machine:
#   cp claims-*.jsonl reports/results/claims/
#   python -m bench report reports/results/*.jsonl reports/results/claims/*.jsonl --out reports/claims.md
# (reports/t4.md and reports/h100.md stay as they are: one tier each.)
set -uo pipefail
PART=${1:?usage: report_claims.sh sizes|variants|l4|s7-mistral|s7-qwen|s7-phi}
. scripts/gpu/_env.sh
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
CACHE=${CACHE:-/tmp/qbcache}
WORK=$(mktemp -d /tmp/report-claims.XXXXXX)  # bench run writes worker logs beside its --out: keep them out of $OUT
RESULTS="$WORK/claims-$PART.jsonl"
CONSOLE="$OUT/claims-$PART.console.txt"
COMMON=(--min-steps 4 --min-seconds 0 --warmup-steps 2 --cache-dir "$CACHE" --out "$RESULTS" --resume)

run() {  # run ARGS...: one bench run appended to this part's results file
    echo "== bench run $*" | tee -a "$CONSOLE"
    COLUMNS=160 python3 -m bench run "$@" "${COMMON[@]}" 2>&1 | tail -n 40 | tee -a "$CONSOLE"
}

echo "== host: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)" | tee "$CONSOLE"
case "$PART" in
    sizes)
        run --gpu-tier h100 --model llama-3.1-8b --seq-len 2048 --batch-size 1,4,8 ;;
    variants)
        run --gpu-tier h100 --model llama-3.1-8b --seq-len 2048 --batch-size 2 --gradient-checkpointing none
        run --gpu-tier h100 --model llama-3.1-8b --seq-len 2048 --batch-size 2 --backend unsloth \
            --gradient-checkpointing standard
        run --gpu-tier h100 --model llama-3.1-8b --seq-len 2048 --batch-size 2 --optimizer adamw_torch ;;
    l4)
        run --gpu-tier l4 --model mistral-7b-v0.3 --seq-len 2048 --batch-size 2 --grad-accum 4 ;;
    s7-mistral)
        run --gpu-tier h100 --model mistral-7b-v0.3 --seq-len 2048 --batch-size 1,2,4,8 --backend unsloth ;;
    s7-qwen)
        run --gpu-tier h100 --model qwen2.5-7b --seq-len 2048 --batch-size 1,2,4,8 --backend unsloth ;;
    s7-phi)
        run --gpu-tier h100 --model phi-3-mini --seq-len 2048 --batch-size 1,2,4,8 --backend unsloth ;;
    *)
        echo "unknown part $PART" >&2; exit 2 ;;
esac
test -f "$RESULTS" && cp "$RESULTS" "$OUT/"
tail -n 8 "${RESULTS%.jsonl}".logs/* > "$OUT/claims-$PART.log" 2>/dev/null
python3 -m bench report "$RESULTS" --out "$WORK/check.md" >> "$CONSOLE" 2>&1 && echo "== report renders" | tee -a "$CONSOLE"
echo "== done: $(ls "$OUT" | tr '\n' ' ')"
