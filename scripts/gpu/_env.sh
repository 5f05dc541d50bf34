# Sourced by every scripts/gpu/*.sh (run from the repository root with .gpu-site carried):
# the offline QLoRA stack from .gpu-site, and the suite commit the results will name.
command -v flock >/dev/null || flock() { shift; "$@"; }  # no util-linux: run unlocked
# Unpacked once per machine (parts running side by side on two GPUs must not unpack over each other).
if [ ! -f /tmp/site/.unpacked ]; then
    flock /tmp/.site.lock sh -c '[ -f /tmp/site/.unpacked ] || { tar xzf .gpu-site/site.tgz -C /tmp && touch /tmp/site/.unpacked; }'
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1
# The GPU machine gets the tree without .git: results name the commit only through this variable.
# Set it from `git rev-parse HEAD` on the machine that has the checkout, before the GPU call.
export QLORA_BENCH_COMMIT=${QLORA_BENCH_COMMIT:-$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)}
