#!/usr/bin/env bash
# One prepared check for a CUDA machine: the CUDA tests and the GPU benches, under 8 minutes.
#
#   bash bench/gpu_check.sh
#
# Writes bench/results/gpu_<gpu>.md (the GPU named, each step's exit status and seconds, and
# the tables below) and the benches' own files: gpu_latency.md, gpu_runtime_fps.md,
# gpu_train_scaling.md and latency_paper_scale_gpu.{csv,md}. Each step has its own time
# limit, so one slow or failing step cannot eat the others' time; the step table says
# which ran to the end (exit 0), failed, or hit its limit (124).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: torch sees no CUDA GPU here; nothing to check" >&2
    exit 2
fi
GPU="$(python -c "import torch; print(torch.cuda.get_device_name(0))")"
SLUG="$(echo "$GPU" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '_' | sed 's/^_*//; s/_*$//')"
OUT=bench/results
REPORT="$OUT/gpu_${SLUG}.md"
LOGS="$(mktemp -d)"
: > "$LOGS/steps"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log, record status and seconds
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*" >&2
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "| $name | $rc | $((SECONDS - t0)) | \`$*\` |" >> "$LOGS/steps"
    tail -3 "$LOGS/$name.log" >&2
    return $rc
}

step cuda_tests 90 python -m pytest -q -rs -p no:cacheprovider -k cuda tests
step latency 80 python -m pytest -q -p no:cacheprovider bench/test_latency.py --benchmark-only --bench-devices cuda \
    -k "explainer or reciprocam or gradcam or sise or rise" --benchmark-json "$LOGS/latency.json" \
    && python bench/tables.py latency "$LOGS/latency.json" -o "$OUT/gpu_latency.md" \
        --title "Latency on $GPU (bundled shapes models, 64 px, papers' defaults)"
step runtime_fps 100 python -m pytest -q -p no:cacheprovider bench/test_runtime_fps.py --benchmark-only -k cuda \
    --benchmark-json "$LOGS/runtime_fps.json" \
    && python bench/tables.py runtime_fps "$LOGS/runtime_fps.json" -o "$OUT/gpu_runtime_fps.md"
step train_scaling 60 python bench/experiments/train_scaling.py --device cuda --nproc 1 --amp off auto --trainers explainer \
    --images 2048 --md "$OUT/gpu_train_scaling.md"
step paper_scale 120 python bench/paper_scale.py --device cuda --no-onnx --top1-only extremal --repeats 20 \
    --out-dir "$OUT"

{
    echo "# GPU check: $GPU"
    echo
    echo "\`bash bench/gpu_check.sh\` on $(date -u +%Y-%m-%d): $GPU, $(nvidia-smi --query-gpu=driver_version,memory.total \
        --format=csv,noheader 2>/dev/null | head -1 | sed 's/^/driver /'), $(python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')."
    echo
    echo "| step | exit | seconds | command |"
    echo "|---|---|---|---|"
    cat "$LOGS/steps"
    echo
    echo "CUDA tests: $(grep -E '[0-9]+ (passed|failed)' "$LOGS/cuda_tests.log" | tail -1)"
    for f in gpu_latency.md gpu_runtime_fps.md gpu_train_scaling.md latency_paper_scale_gpu.md; do
        [ -f "$OUT/$f" ] && { echo; echo "## From \`$f\`"; echo; sed 's/^#/##/' "$OUT/$f"; }
    done
} > "$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
echo "wrote $REPORT (logs in $LOGS)" >&2
