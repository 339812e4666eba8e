#!/usr/bin/env bash
# Installed size of each install the README names: a fresh virtual environment per extras set,
# `pip install -e ".[EXTRAS]"`, then the size of the environment (pip itself included) and
# whether torch came with it. Writes bench/results/install_sizes.md.
#
#   bash bench/install_sizes.sh            # every install in the README's table
#   bash bench/install_sizes.sh cpu        # just one
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
OUT="${OUT:-bench/results/install_sizes.md}"
SETS=("$@")
[ ${#SETS[@]} -eq 0 ] && SETS=("cpu" "cpu,video" "cpu,gui" "torch,export,video" "cpu,export,video,coco,dev")
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROWS=()
for extras in "${SETS[@]}"; do
    env="$WORK/venv"
    rm -rf "$env"
    python3 -m venv "$env"
    "$env/bin/python" -m pip install -q --upgrade pip 2>/dev/null
    echo "installing .[$extras]" >&2
    "$env/bin/python" -m pip install -q -e ".[$extras]" 2>/dev/null
    mb=$(du -sm "$env" | cut -f1)
    if "$env/bin/python" -c "import torch" 2>/dev/null; then torch=yes; else torch=no; fi
    if (cd "$WORK" && OMP_NUM_THREADS=1 "$env/bin/runtime-explain" --demo --max-frames 8 --no-show >/dev/null 2>&1); then
        demo=runs; else demo=fails; fi
    ROWS+=("| \`pip install -e \".[$extras]\"\` | $mb | $torch | $demo |")
    echo "${ROWS[-1]}" >&2
    rm -rf "$env"
done
{
    echo "# Installed size of each install"
    echo
    echo "\`bash bench/install_sizes.sh\` — a fresh virtual environment per row (Python $(python3 -c 'import sys;print(sys.version.split()[0])'), $(uname -m) Linux), pip included;"
    echo "\`runtime-explain --demo\` = whether \`runtime-explain --demo --max-frames 8 --no-show\` runs there."
    echo
    echo "| install | MB | torch | \`runtime-explain --demo\` |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
