#!/usr/bin/env bash
# GPU evidence for issue 4 (kernels_check): which Unsloth fast kernels ran, which fell back.
#
# Three commands, each under ~9 minutes on an H100 (no network), run from the repository root
# with .gpu-site carried (site.tgz; pytest-site.tgz is used only if pytest is missing there):
#   PART=1 bash scripts/gpu/kernels.sh  # kernel tests + micro-benchmarks; llama-3.2-1b, pythia-1b  (~6 min)
#   PART=2 bash scripts/gpu/kernels.sh  # llama-3.2-3b, phi-3-mini, llama-3.1-8b                    (~6 min)
#   PART=3 bash scripts/gpu/kernels.sh  # mistral-7b-v0.3, qwen2.5-7b, gemma-2-9b                   (~7 min)
# (PART=all runs every shipped architecture in one go where a command may run ~20 minutes; its
#  results come back as one kernels-results.tgz.)
#
# Each model: `bench kernels-check --model M` spawns one worker (imports unsloth first), builds
# the synthetic checkpoint, loads it with the unsloth backend, trains 2 warm-up steps (compile),
# profiles one more step (torch.profiler, CUDA activity) and runs the static check. Checkpoints
# are deleted after each model so the 7-9B ones fit the disk.
#
# Writes under $OUT (at most 6 files per part):
#   PART=1: kernels-benchmark.json (pytest-benchmark), kernels-tests.txt (pytest output),
#           llama-3.2-1b.json, pythia-1b.json (results incl. the kernel trace excerpts),
#           kernels-part1.md (coverage table of this part), kernels-part1.log
#   PART=2/3: <model>.json for its three models, kernels-partN.md, kernels-partN.log
# Then, on the CPU machine:
#   mkdir -p reports/kernels && cp <OUT>/*.json reports/kernels/   (not kernels-benchmark.json)
#   cp <OUT of part 1>/kernels-benchmark.json reports/kernels-benchmark.json
#   cp <OUT of part 1>/kernels-tests.txt reports/kernels/kernels-tests.txt
#   python -m bench kernels-check --from-results reports/kernels/ --results reports/results/ \
#       --benchmark reports/kernels-benchmark.json --test-log reports/kernels/kernels-tests.txt --out reports/kernels.md
#   python -m pytest tests/integration/test_kernels_check.py   # and tests/evidence/ (the committed kernels results)
set -uo pipefail
. scripts/gpu/_env.sh
export COLUMNS=160
OUT=${OUT:?set OUT to the output folder}
PART=${PART:-1}
mkdir -p "$OUT"
CACHE=${CACHE:-/tmp/qbcache-kernels}
WORK=$(mktemp -d /tmp/kernels.XXXXXX)  # worker logs and results; only the results are copied to $OUT
LOG="$OUT/kernels-part$PART.log"

case "$PART" in
  1) MODELS="llama-3.2-1b pythia-1b" ;;
  2) MODELS="llama-3.2-3b phi-3-mini llama-3.1-8b" ;;
  3) MODELS="mistral-7b-v0.3 qwen2.5-7b gemma-2-9b" ;;
  all) MODELS="llama-3.2-1b pythia-1b llama-3.2-3b phi-3-mini llama-3.1-8b mistral-7b-v0.3 qwen2.5-7b gemma-2-9b" ;;
  *) echo "PART must be 1, 2, 3 or all" >&2; exit 2 ;;
esac

say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
say "host: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
say "part $PART: $MODELS"

if [ "$PART" = 1 ] || [ "$PART" = all ]; then
    if ! python3 -c "import pytest, pytest_benchmark" 2>/dev/null; then
        mkdir -p /tmp/pytest-site && tar xzf .gpu-site/pytest-site.tgz -C /tmp/pytest-site \
            && export PYTHONPATH="$PYTHONPATH:/tmp/pytest-site"
        say "pytest from .gpu-site/pytest-site.tgz: $(python3 -c 'import pytest, pytest_benchmark; print(pytest.__version__, pytest_benchmark.__version__)' 2>&1)"
    fi
    # Correctness (per-dtype bounds) and timing in one pass: every test checks, then benchmarks.
    # One process that imports unsloth and trains no HF baseline.
    say "kernel tests: pytest tests/gpu/test_kernels.py"
    timeout 330 python3 -m pytest tests/gpu/test_kernels.py -p no:cacheprovider -q -rfEs \
        --benchmark-json="$OUT/kernels-benchmark.json" --benchmark-columns=min,median,mean,stddev,rounds \
        --benchmark-sort=name > "$OUT/kernels-tests.txt" 2>&1
    say "pytest exit code $? ($(tail -n 1 "$OUT/kernels-tests.txt"))"
fi

for m in $MODELS; do
    say "kernels-check $m"
    python3 -m bench kernels-check --model "$m" --seq-len 1024 --batch-size 1 --warmup-steps 2 \
        --save-dir "$WORK/results" --cache-dir "$CACHE" --timeout 420 --detail 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    say "$m: exit code $rc"
    if [ "$rc" != 0 ]; then
        tail -n 60 "$WORK/results/kernels-$m.log" >> "$LOG" 2>/dev/null
    fi
    rm -rf "$CACHE"/checkpoints/"$m"-*
done

if ls "$WORK"/results/*.json >/dev/null 2>&1; then
    if [ "$PART" = all ]; then  # eight results would pass the 8-file limit of $OUT: one archive
        tar czf "$OUT/kernels-results.tgz" -C "$WORK/results" $(cd "$WORK/results" && ls *.json)
    else
        cp "$WORK"/results/*.json "$OUT/"
    fi
    python3 -m bench kernels-check --from-results "$WORK/results" --out "$OUT/kernels-part$PART.md" 2>&1 \
        | tail -n 3 | tee -a "$LOG"
fi
say "done; files: $(ls "$OUT" | tr '\n' ' ')"
