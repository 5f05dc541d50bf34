#!/usr/bin/env bash
# GPU evidence for issues 9, 10 and 13 on the two-GPU kind (nvidia-h200-x2), in parts that each fit a
# 10-minute command, from the repository root with .gpu-site carried:
#   PART=default QLORA_BENCH_COMMIT=$(git rev-parse HEAD) bash scripts/gpu/evidence.sh
#       the default `bench run --gpu-tier t4` matrix (hf-trl, hf-kbit, unsloth; llama-3.1-8b at seq 1024 /
#       2048 x batch 1 / 2) on one GPU alone, then the same matrix with --gpus all (both GPUs)
#   PART=dask ...   the same matrix through a Dask scheduler with one worker per GPU on this host, then
#       (within the time left) the 8B ladder on the native tier: every recipe at seq 2048 / 8192 x
#       batch 1 / 2 / 4 with --gpus all (resumable: run PART=ladder to continue it)
#   PART=ladder ... continue the ladder (or start it). REPEATS (default 1) measurements of each cell, each in a
#       fresh worker; every command that continues one ladder file must pass the same (--resume refuses
#       another). One repeat of its 36 cells should take about 12 minutes on two H200s (recipes_rest.sh's 36
#       every-recipe cells did), three repeats three times that: past one session's GPU time with the scale-out
#       parts, so the default is one (each cell's interval is then over its timed steps)
# Every part writes under $OUT: <name>.jsonl (records), <name>.console.txt, logs-<part>.tgz (worker logs).
# The synthetic 8B checkpoint is written once per machine (/tmp/qbcache), so parts run back to back on
# a warm machine skip it. Then, on the CPU machine: copy the .jsonl / .console.txt files to
# reports/results/ and run scripts/regen_reports.sh (reports/recipes.md, reports/scale-out.md).
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PART=${PART:-default}
. scripts/gpu/_lib.sh
LADDER=(--gpu-tier h200 --model llama-3.1-8b --recipe hf-trl,unsloth,hf-kbit,hf-liger,hf-lora16,unsloth-lora16
        --seq-len 2048,8192 --batch-size 1,2,4 --repeats "${REPEATS:-1}" --gpus all)  # the timed window's defaults (10 steps, 10 s)

say "host: $(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tr '\n' ';')"
checkpoint
case "$PART" in
  default)
    CUDA_VISIBLE_DEVICES=0 bench_run t4-default-1gpu 340 --gpu-tier t4
    bench_run t4-default-2gpu "$(( $(left) > 60 ? $(left) : 60 ))" --gpu-tier t4 --gpus all
    ;;
  dask)
    python3 -m distributed.cli.dask_scheduler --port 8786 --no-dashboard > "$WORK/dask-scheduler.log" 2>&1 &
    sleep 4
    for g in 0 1; do
        CUDA_VISIBLE_DEVICES=$g python3 -m distributed.cli.dask_worker tcp://127.0.0.1:8786 --nthreads 1 \
            --resources "GPU=1,GPU_MEM_GIB=139,h200=1" --no-dashboard --name "gpu$g" > "$WORK/dask-worker-$g.log" 2>&1 &
    done
    sleep 8
    bench_run t4-default-dask 240 --gpu-tier t4 --executor dask --scheduler tcp://127.0.0.1:8786
    [ "$(left)" -gt 90 ] && bench_run h200-ladder "$(left)" "${LADDER[@]}"
    ;;
  ladder)
    [ -f "$OUT/../h200-ladder.jsonl" ] || true
    bench_run h200-ladder "$(left)" "${LADDER[@]}"
    ;;
  *) echo "PART must be default, dask or ladder" >&2; exit 2 ;;
esac
pack_logs
say "part $PART done in $((SECONDS - START)) s"
tail -n 45 "$LOG"
