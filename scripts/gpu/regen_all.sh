#!/usr/bin/env bash
# Regenerates every committed GPU results file at the current commit, in parts (most fit one 10-minute
# command; the every-recipe ones take longer and continue across commands), then every report. From the
# repository root with .gpu-site carried (build it with ../shared/tools/offline-gpu-site.sh .gpu-site; the
# GSM8K parts also need .gpu-site/data/gsm8k-train-alpaca.json).
#
#   bash scripts/gpu/regen_all.sh list
#       the parts: what each writes (paths under reports/), the GPU kind it needs, its time on an H200
#   bash scripts/gpu/regen_all.sh status
#       (CPU) each part's committed files: records, schema versions, the commits and dates they name, and
#       whether the part is current (schema 3, commits that exist) or still to re-measure
#   PART=<part> OUT=<folder> QLORA_BENCH_COMMIT=$(git rev-parse HEAD) bash scripts/gpu/regen_all.sh
#       one part on the GPU machine; results land under <folder> with their reports/ paths; a part that
#       runs out of time is resumable: run it again with RESUME_DIR naming the folder that holds its partial
#       results files (the bench-run parts: recipes-*, gsm8k, articles; fit-*; e.g. RESUME_DIR=reports/results/recipes
#       to continue the committed files: the tree travels) or, for default-t4 / native-h100, with the same
#       <folder> contents copied back first; without it a part starts afresh (a re-measurement never reuses
#       the committed records) unless an earlier command on the same warm machine left them in /tmp/qb-work
#   bash scripts/gpu/regen_all.sh install <folder>...
#       on the machine with the checkout (CPU): copy the parts' files into reports/, check that every
#       record names a commit that exists here, then scripts/regen_reports.sh (every report)
#   PART=all ...   every part in order, on a machine where one command may run for hours
#   PART=kernels-liger:120,recipes-t4:300 BUNDLE=1 ...   several parts in one command, each stopped after
#       its seconds (EVIDENCE_BUDGET_S, default 560; resumable as above); BUNDLE=1 packs $OUT into one
#       parts.tgz (the device tool returns at most 8 files); install takes the unpacked folder
#
# Two parts side by side on a two-GPU machine (CUDA_VISIBLE_DEVICES=0 for one, =1 for the other) halve the wall
# time, and their memory is measured as alone; their speeds are not: each part's steps partly wait on the CPU
# and the other part keeps the host's CPUs busy (records' host_cpu, and a warning when others kept a quarter of
# the cores busy). Run a part whose speeds matter (the ladder, the articles' speed claims) alone on the host.
#
# QLORA_BENCH_COMMIT must be the commit of the tree the GPU runs (the GPU copy has no .git); install
# refuses records whose commit is not in this repository. A part needing a GPU this machine is not
# (native-h100 on an H200, say) says so and writes nothing: an emulated tier is never a native one.
set -uo pipefail
cd "$(dirname "$0")/../.."

# part | GPU kind (device tool) | about (minutes on an H200, as measured on 2026-11-30: the recipes ones for one
# repeat of each cell; articles took ~31 GPU-minutes with one repeat (9 min on two GPUs, then 13.5 on one), its
# S2 / S4 parts with 3 repeats ~6 and ~5; default-t4, fit-*, gate, kernels-1/2 and smoke at 8d69091 or be52e34,
# two parts side by side on two GPUs; estimated: the ladder (36 cells x REPEATS=1, like recipes-t4), native-h100,
# kernels-3, scale-*) | what it runs | files it writes (under reports/)
PARTS=$(cat <<'EOF'
default-t4|nvidia-h200|7|bench run --gpu-tier t4 (the default matrix, emulated)|results/t4-emulated.jsonl
native-h100|an H100|7|bench run --gpu-tier h100 (native: needs an H100)|results/h100-native.jsonl
fit-t4|nvidia-h200|5|scripts/gpu/fit.sh TIER=t4|results/fit-t4-emulated.jsonl
fit-a10g|nvidia-h200|5|scripts/gpu/fit.sh TIER=a10g|results/fit-a10g-emulated.jsonl
gate|nvidia-h200|3|scripts/gpu/gate_heavier.sh|results/gate/t4-rerun.jsonl results/gate/t4-heavier-r64.jsonl
kernels-1|nvidia-h200|3|scripts/gpu/kernels.sh PART=1 (kernel tests, micro-benchmarks, 2 models)|kernels/llama-3.2-1b.json kernels/pythia-1b.json kernels-benchmark.json kernels/kernels-tests.txt
kernels-2|nvidia-h200|4|scripts/gpu/kernels.sh PART=2|kernels/llama-3.2-3b.json kernels/phi-3-mini.json kernels/llama-3.1-8b.json
kernels-3|nvidia-h200|7|scripts/gpu/kernels.sh PART=3|kernels/mistral-7b-v0.3.json kernels/qwen2.5-7b.json kernels/gemma-2-9b.json
smoke|nvidia-h200|5|scripts/gpu/smoke_recipes.sh|results/smoke/smoke-native.jsonl results/smoke/smoke-t4.jsonl
scale-default|nvidia-h200-x2|9|scripts/gpu/evidence.sh PART=default (1 GPU, then --gpus all)|results/scale-out/t4-default-1gpu.jsonl results/scale-out/t4-default-2gpu.jsonl
scale-dask|nvidia-h200-x2|9|scripts/gpu/evidence.sh PART=dask, then the H200 ladder|results/scale-out/t4-default-dask.jsonl results/recipes/h200-ladder.jsonl
ladder|nvidia-h200-x2|12|scripts/gpu/evidence.sh PART=ladder (the H200 ladder, every recipe; resumable)|results/recipes/h200-ladder.jsonl
recipes-t4|nvidia-h200-x2|12|scripts/gpu/recipes_rest.sh PART=t4 (every recipe, emulated T4)|results/recipes/t4-every-recipe.jsonl
recipes-a10g|nvidia-h200-x2|10|scripts/gpu/recipes_rest.sh PART=a10g|results/recipes/a10g-every-recipe.jsonl
gsm8k|nvidia-h200-x2|7|scripts/gpu/recipes_rest.sh PART=gsm8k (--data, packed and padded)|results/recipes/t4-gsm8k-padded.jsonl results/recipes/t4-gsm8k-packed.jsonl
articles|nvidia-h200-x2|18|scripts/gpu/recipes_rest.sh PART=articles (bench run --preset articles; S2 and S4 x 3 repeats)|results/recipes/articles/
long-context|nvidia-h200|8|scripts/gpu/recipes_rest.sh PART=long-context (Unsloth at 32k, 3 architectures)|results/estimator/h200-unsloth-long-context.jsonl results/estimator/h200-unsloth-phi3-4k.jsonl
kernels-liger|nvidia-h200|2|bench kernels-check --recipe hf-liger --model llama-3.1-8b|kernels/llama-3.1-8b.hf-liger.json
EOF
)

list_parts() {
    printf '%-14s %-15s %4s  %s\n' part "GPU kind" min "runs -> writes (under reports/)"
    echo "$PARTS" | while IFS='|' read -r name kind minutes what files; do
        printf '%-14s %-15s %4s  %s\n%35s-> %s\n' "$name" "$kind" "$minutes" "$what" "" "$files"
    done
}

status_parts() {  # status_parts: the committed files of every part, and whether each part is current
    echo "$PARTS" | python3 scripts/gpu/evidence_files.py status
}

host_gpu() { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1; }

run_default() {  # run_default NAME TIER: one resumable `bench run --gpu-tier TIER` into $OUT/results/NAME.jsonl
    local name=$1 tier=$2
    export PART=$name
    . scripts/gpu/_lib.sh
    mkdir -p "$OUT/results"
    [ -f "$OUT/results/$name.jsonl" ] && cp "$OUT/results/$name.jsonl" "$WORK/"
    bench_run "$name" "$(left)" --gpu-tier "$tier"
    mv "$OUT/$name.jsonl" "$OUT/$name.console.txt" "$OUT/results/" 2>/dev/null
}

run_part() {  # run_part PART: one part on this GPU machine, files under $OUT with their reports/ paths
    local part=$1 sub dest
    case $part in
        default-t4) run_default t4-emulated t4 ;;
        native-h100)
            if ! host_gpu | grep -q "H100"; then
                echo "native-h100 needs an H100 (this GPU: $(host_gpu)); nothing written" >&2; return 3
            fi
            run_default h100-native h100 ;;
        fit-t4|fit-a10g)
            TIER=${part#fit-} bash scripts/gpu/fit.sh
            mkdir -p "$OUT/results" && mv "$OUT"/fit-*-emulated.* "$OUT/results/" 2>/dev/null ;;
        gate)
            bash scripts/gpu/gate_heavier.sh
            mkdir -p "$OUT/results/gate" && mv "$OUT"/t4-*.jsonl "$OUT/results/gate/" 2>/dev/null ;;
        kernels-liger)  # Liger's kernels in one profiled step of the hf-liger recipe (its own origin in the table)
            mkdir -p "$OUT/kernels"
            timeout "$EVIDENCE_BUDGET_S" python3 -m bench kernels-check --recipe hf-liger --model llama-3.1-8b --seq-len 1024 \
                --batch-size 1 --warmup-steps 2 --save-dir "$OUT/kernels" --cache-dir "${CACHE:-/tmp/qbcache}" \
                --timeout $((EVIDENCE_BUDGET_S - 20)) --detail > "$OUT/kernels/kernels-liger.log" 2>&1
            echo "kernels-check hf-liger: exit code $?" | tee -a "$OUT/kernels/kernels-liger.log" ;;
        kernels-*)
            sub=${part#kernels-}
            PART=$sub bash scripts/gpu/kernels.sh
            mkdir -p "$OUT/kernels"
            for f in "$OUT"/*.json; do
                case $(basename "$f") in kernels-benchmark.json) ;; *) mv "$f" "$OUT/kernels/" ;; esac
            done
            [ -f "$OUT/kernels-tests.txt" ] && mv "$OUT/kernels-tests.txt" "$OUT/kernels/" ;;
        smoke)
            bash scripts/gpu/smoke_recipes.sh
            mkdir -p "$OUT/results/smoke" && mv "$OUT"/smoke* "$OUT/results/smoke/" 2>/dev/null ;;
        scale-default|scale-dask|ladder)
            PART=${part#scale-} bash scripts/gpu/evidence.sh
            mkdir -p "$OUT/results/scale-out" "$OUT/results/recipes"
            mv "$OUT"/h200-ladder.* "$OUT/results/recipes/" 2>/dev/null
            [ "$part" = ladder ] && mv "$OUT"/evidence-* "$OUT"/logs-* "$OUT/results/recipes/" 2>/dev/null
            mv "$OUT"/t4-default-* "$OUT"/evidence-* "$OUT"/logs-* "$OUT/results/scale-out/" 2>/dev/null ;;
        recipes-t4|recipes-a10g|gsm8k|articles|long-context)
            sub=${part#recipes-}
            PART=$sub bash scripts/gpu/recipes_rest.sh
            dest=recipes; [ "$part" = long-context ] && dest=estimator
            mkdir -p "$OUT/results/$dest"
            mv "$OUT"/h200-unsloth-* "$OUT/results/estimator/" 2>/dev/null
            mv "$OUT"/*-every-recipe.* "$OUT"/t4-gsm8k-* "$OUT"/articles* "$OUT/results/recipes/" 2>/dev/null
            mv "$OUT/evidence-$sub.console.txt" "$OUT/results/$dest/evidence-$part.console.txt" 2>/dev/null
            mv "$OUT/logs-$sub.tgz" "$OUT/results/$dest/logs-$part.tgz" 2>/dev/null ;;
        *) echo "unknown part '$part'; the parts: bash scripts/gpu/regen_all.sh list" >&2; return 2 ;;
    esac
}

installed() {  # installed FOLDER TYPE: the paths (./..., find -type TYPE) under FOLDER that install takes
    (cd "$1" && find . -type "$2" \( -path './results/*' -o -path './kernels/*' -o -name kernels-benchmark.json \) -print)
}

unknown_commits() {  # the commits the files install takes (results/, kernels/, the benchmark file) name that are not here
    local folder
    for folder in "$@"; do installed "$folder" f | grep -E '\.jsonl?$' | sed "s|^\.|$folder|"; done \
        | tr '\n' '\0' | xargs -0 -r python3 scripts/gpu/evidence_files.py bad-commits
}

install() {  # install FOLDER...: their reports/ paths into reports/, commits checked, reports regenerated
    local folder bad
    bad=$(unknown_commits "$@")
    if [ -n "$bad" ]; then
        echo "$bad" | while IFS= read -r sha; do
            echo "records name commit '$sha', which is not in this repository: refused" >&2
        done
        return 2
    fi
    for folder in "$@"; do  # a results file's worker logs come whole: the logs of the run it replaces go
        installed "$folder" d | grep '\.logs$' | while read -r d; do rm -rf "reports/${d:?}"; done
        installed "$folder" f | while read -r f; do mkdir -p "reports/$(dirname "$f")"; cp "$folder/$f" "reports/$f"; done
    done
    bash scripts/regen_reports.sh
}

case ${1:-} in
    list) list_parts; exit 0 ;;
    status) status_parts; exit $? ;;
    install) shift; install "$@"; exit $? ;;
esac
OUT=${OUT:?set OUT (the folder results go to)}
export OUT
. scripts/gpu/_env.sh
PART=${PART:?set PART (bash scripts/gpu/regen_all.sh list)}
[ "$PART" = all ] && PART=$(echo "$PARTS" | cut -d'|' -f1 | paste -sd,)
rc=0
DEFAULT_BUDGET_S=${EVIDENCE_BUDGET_S:-560}
for spec in ${PART//,/ }; do
    p=${spec%%:*}; budget=${spec#"$p"}; budget=${budget#:}
    export EVIDENCE_BUDGET_S=${budget:-$DEFAULT_BUDGET_S}
    run_part "$p" || rc=$?
done
if [ "${BUNDLE:-0}" = 1 ]; then
    tar czf /tmp/parts.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/parts.tgz "$OUT/parts.tgz"
fi
exit $rc
