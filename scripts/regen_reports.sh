#!/usr/bin/env bash
# Regenerates every committed report under reports/ from the committed results files (CPU, seconds).
# Nothing here measures: each report is `bench ...` output over files under reports/results/ and
# reports/kernels/. Run after new GPU results are committed, then review `git diff reports/`.
# Usage: bash scripts/regen_reports.sh        (BENCH="python -m bench" to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-python3 -m bench}
export BENCH COLUMNS=${COLUMNS:-200}
R=reports/results
# Every plot under reports/ is a report's: written again below, so plots of results no report shows any more
# (a file measured again on another GPU names another plot) do not linger.
rm -f reports/*.png
# `bench run --preset articles`: the articles' own comparisons, each against the baseline its article used
ARTICLES=($R/recipes/articles/s2-7b-lora16.jsonl $R/recipes/articles/s4-l4-mistral.jsonl
          $R/recipes/articles/s7-unsloth-vram.jsonl $R/recipes/articles/s3-peft.jsonl)
# Every claim judged once over all the evidence (reports/claims.md); each report shows those verdicts.
CLAIMS=($R/t4-emulated.jsonl $R/gate/t4-heavier-r64.jsonl $R/fit-t4-emulated.jsonl $R/h100-native.jsonl
        $R/fit-a10g-emulated.jsonl $R/scale-out/t4-default-1gpu.jsonl $R/recipes/h200-ladder.jsonl
        $R/recipes/t4-every-recipe.jsonl $R/recipes/a10g-every-recipe.jsonl
        $R/recipes/t4-gsm8k-padded.jsonl $R/recipes/t4-gsm8k-packed.jsonl "${ARTICLES[@]}"
        reports/kernels/ reports/kernels-benchmark.json)
$BENCH claims "${CLAIMS[@]}" --out reports/claims.md > /dev/null
CE=(--claims-doc reports/claims.md); for f in "${CLAIMS[@]}"; do CE+=(--claims-evidence "$f"); done
$BENCH report $R/t4-emulated.jsonl $R/gate/t4-heavier-r64.jsonl $R/fit-t4-emulated.jsonl --out reports/t4.md "${CE[@]}"
$BENCH report $R/h100-native.jsonl --out reports/h100.md "${CE[@]}"
$BENCH report $R/fit-a10g-emulated.jsonl --out reports/a10g.md "${CE[@]}"
$BENCH report $R/scale-out/t4-default-1gpu.jsonl $R/recipes/h200-ladder.jsonl $R/recipes/t4-every-recipe.jsonl \
    $R/recipes/a10g-every-recipe.jsonl --out reports/recipes.md "${CE[@]}"
# Real data (GSM8K, --data): padded batches against packed ones, per recipe
$BENCH report $R/recipes/t4-gsm8k-padded.jsonl $R/recipes/t4-gsm8k-packed.jsonl --out reports/gsm8k.md "${CE[@]}"
$BENCH report "${ARTICLES[@]}" --out reports/articles.md "${CE[@]}"
$BENCH scale-out $R/scale-out/t4-default-1gpu.jsonl $R/scale-out/t4-default-2gpu.jsonl \
    $R/scale-out/t4-default-dask.jsonl --out reports/scale-out.md > /dev/null
$BENCH fit --from-results $R/fit-t4-emulated.jsonl $R/fit-a10g-emulated.jsonl --out reports/max-fit.md > /dev/null
# The estimator: calibrated on the H100 loop-driver files (those bench/data/calibration.json is written
# from), validated on the held-out trainer-driver files (other recipes, seq 8192, batch 4, llama-3.2-1b, the
# emulated t4 and a10g caps, the articles' Mistral / Phi-3 / Qwen2.5 cells, Unsloth at 32k tokens).
$BENCH estimate --validate $R/fit-a10g-emulated.jsonl $R/fit-t4-emulated.jsonl $R/h100-native.jsonl \
    $R/t4-emulated.jsonl --validate-on $R/recipes/h200-ladder.jsonl --validate-on $R/scale-out/t4-default-1gpu.jsonl \
    --validate-on $R/smoke/smoke-native.jsonl --validate-on $R/smoke/smoke-t4.jsonl \
    --validate-on $R/recipes/t4-every-recipe.jsonl --validate-on $R/recipes/a10g-every-recipe.jsonl \
    $(for f in "${ARTICLES[@]}" $R/estimator/h200-unsloth-long-context.jsonl $R/estimator/h200-unsloth-phi3-4k.jsonl; do
        echo --validate-on "$f"; done) \
    --out reports/estimator.md > /dev/null
$BENCH kernels-check --from-results reports/kernels/ $(for f in $R/*.jsonl; do echo --results "$f"; done) \
    --benchmark reports/kernels-benchmark.json --test-log reports/kernels/kernels-tests.txt \
    --out reports/kernels.md > /dev/null || [ $? -eq 1 ]  # 1: a model's check failed (shown in the table)
bash scripts/gate_evidence.sh > /dev/null
git status --short reports/
