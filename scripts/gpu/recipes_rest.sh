#!/usr/bin/env bash
# The recipe evidence beyond the native ladder, on the two-GPU kind (nvidia-h200-x2), in parts stopped by
# their time budget (EVIDENCE_BUDGET_S) and continued by the next command, from the repository root with
# .gpu-site carried and ../shared/data/gsm8k-train-alpaca.json copied to .gpu-site/data/:
#   PART=t4 QLORA_BENCH_COMMIT=$(git rev-parse HEAD) OUT=$OUT bash scripts/gpu/recipes_rest.sh
#       every recipe on an emulated T4: llama-3.1-8b at seq 2048 / 8192 x batch 1 / 2 / 4 (cells at least
#       as large as an out-of-memory one are recorded as skipped); REPEATS (default 3) fresh workers per cell,
#       repeat 0 of every cell first, so a part cut by its time budget still covers every cell
#   PART=a10g ...   the same on an emulated A10G (24 GB)
#   PART=gsm8k ...  hf-trl, hf-kbit and unsloth on GSM8K (--data), emulated T4, seq 1024 x batch 2 / 4,
#       with --packing and without
#   PART=articles ... `bench run --preset articles` (the articles' own comparisons), native H200 tier for
#       the part with no GPU stated (ARTICLES=articles/s2-7b-lora16,... runs some parts); RESUME_DIR/articles/
#       continues an earlier command's part files
#   PART=long-context ... Unsloth at 32k tokens on llama-3.1-8b, mistral-7b-v0.3, qwen2.5-7b and at 4k on
#       phi-3-mini (native H200, memory only): the estimator's held-out span
# Each part is resumable: run it again on the same machine, or on a fresh one with RESUME_DIR naming a
# folder that holds its partial results files (scripts/gpu/_lib.sh). Then, on the CPU machine:
# scripts/gpu/regen_all.sh install <folder> (it runs these parts and places their files).
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PART=${PART:?PART must be t4, a10g, gsm8k, articles or long-context}
. scripts/gpu/_lib.sh
REPEATS=${REPEATS:-3}
ALL_RECIPES=hf-trl,unsloth,hf-kbit,hf-liger,hf-lora16,unsloth-lora16  # the headline pair first
DATA=.gpu-site/data/gsm8k-train-alpaca.json

say "host: $(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tr '\n' ';')"
case "$PART" in
  t4|a10g)
    checkpoint llama-3.1-8b
    bench_run "$PART-every-recipe" "$(left)" --gpu-tier "$PART" --model llama-3.1-8b --recipe "$ALL_RECIPES" \
        --seq-len 2048,8192 --batch-size 1,2,4 --repeats "$REPEATS" --gpus all  # default window: 10 steps, 10 s
    ;;
  gsm8k)
    [ -f "$DATA" ] || { echo "copy ../shared/data/gsm8k-train-alpaca.json to $DATA first" >&2; exit 2; }
    checkpoint llama-3.1-8b
    half=$(( $(left) / 2 ))
    bench_run t4-gsm8k-padded "$half" --gpu-tier t4 --model llama-3.1-8b --data "$DATA" --no-packing \
        --seq-len 1024 --batch-size 2,4 --gpus all
    bench_run t4-gsm8k-packed "$(left)" --gpu-tier t4 --model llama-3.1-8b --data "$DATA" --packing \
        --seq-len 1024 --batch-size 2,4 --gpus all
    ;;
  articles)
    ARTICLES=${ARTICLES:-articles}  # the preset, or some of its parts
    # the chosen parts' models written side by side first (each ~45 s alone), then every part with --gpus all
    checkpoints $(python3 -c "import sys; from bench.config.presets import preset_parts
print(' '.join(sorted({m for part in preset_parts(sys.argv[1])[1] for m in part.models.split(',')})))" "$ARTICLES")
    mkdir -p "$WORK/articles"
    if [ -d "${RESUME_DIR:-/nonexistent}/articles" ] && [ -z "$(ls -A "$WORK/articles")" ]; then
        cp "$RESUME_DIR"/articles/*.jsonl "$WORK/articles/" 2>/dev/null && say "continuing $RESUME_DIR/articles"
    fi
    if [ "$(left)" -lt 30 ]; then
        say "not started ($(left) s left of the part's budget): bench run --preset $ARTICLES"
    else
        say "bench run --preset $ARTICLES -> articles/ (limit $(left) s)"
        timeout --signal=INT "$(left)" python3 -m bench run "${COMMON[@]}" --gpu-tier h200 --preset "$ARTICLES" \
            --out "$WORK/articles" --resume --gpus all >> "$WORK/articles.console.txt" 2>&1
        say "exit code $?"
    fi
    for logs in "$WORK"/articles/*.logs; do [ -e "$logs" ] && LOGS+=("articles/${logs##*/}"); done
    mkdir -p "$OUT/articles" && cp "$WORK"/articles/*.jsonl "$OUT/articles/" 2>/dev/null
    cp "$WORK/articles.console.txt" "$OUT/"
    ;;
  long-context)
    # the estimator's held-out span (issue 11): Unsloth's QLoRA at 32k tokens per sequence on three
    # architectures (and Phi-3-mini at its 4k context), memory only: 1 warm-up + 2 timed steps per cell
    checkpoints llama-3.1-8b mistral-7b-v0.3 qwen2.5-7b phi-3-mini
    PROBE=(--gpu-tier h200 --recipe unsloth --batch-size 1 --warmup-steps 1 --min-steps 2 --min-seconds 0 --gpus all)
    bench_run h200-unsloth-long-context "$(( $(left) - 100 ))" "${PROBE[@]}" \
        --model llama-3.1-8b,mistral-7b-v0.3,qwen2.5-7b --seq-len 32768
    bench_run h200-unsloth-phi3-4k "$(left)" "${PROBE[@]}" --model phi-3-mini --seq-len 4096
    ;;
  *) echo "PART must be t4, a10g, gsm8k, articles or long-context" >&2; exit 2 ;;
esac
pack_logs
say "part $PART done in $((SECONDS - START)) s"
