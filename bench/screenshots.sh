#!/usr/bin/env bash
# Screenshots of the two ways to watch the runtime, taken for real:
#   bench/results/runtime_serve_chromium.png — `--serve` with 4 demo streams, in headless Chromium
#   bench/results/runtime_window_xvfb.png    — the desktop window (`[gui]` extra) under Xvfb
#   bench/results/runtime_window_grid_xvfb.png — 4 demo streams in one window (a 2×2 grid)
# Needs the Debian packages chromium, xvfb and xauth, and an environment with
# `pip install -e ".[cpu,gui]"` (RUNTIME_BIN points at its bin/ folder; default: the active one).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${RUNTIME_BIN:-$(dirname "$(command -v python)")}"
OUT="${OUT:-bench/results}"
PORT="${PORT:-8765}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# the web view: four streams, one page
(cd "$work" && exec "$BIN/runtime-explain" --source demo --source demo --source demo --source demo \
    --serve "127.0.0.1:$PORT" --no-show --max-frames 1000000 > serve.log 2>&1) &
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/stats.json" > /dev/null && break; sleep 0.5; done
sleep 3  # a few seconds of live statistics on the page
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1000 \
    --virtual-time-budget=3000 --screenshot="$OUT/runtime_serve_chromium.png" "http://127.0.0.1:$PORT/" 2>/dev/null
kill %1

# the desktop window under a virtual X server
cat > "$work/window.sh" <<INNER
"$BIN/runtime-explain" --demo --show --max-frames 1000000 > "$work/window.log" 2>&1 &
sleep 20
"$BIN/python" -c "import os; from PIL import ImageGrab; ImageGrab.grab(xdisplay=os.environ['DISPLAY']).crop((0, 0, 384, 446)).save('$OUT/runtime_window_xvfb.png')"
kill %1
INNER
xvfb-run -a -s "-screen 0 800x600x24" bash "$work/window.sh"
cat > "$work/grid.sh" <<INNER
"$BIN/runtime-explain" --source demo --source demo --source demo --source demo --show --max-frames 1000000 \
    > "$work/grid.log" 2>&1 &
sleep 20
"$BIN/python" -c "import os; from PIL import ImageGrab; ImageGrab.grab(xdisplay=os.environ['DISPLAY']).crop((0, 0, 768, 830)).save('$OUT/runtime_window_grid_xvfb.png')"
kill %1
INNER
xvfb-run -a -s "-screen 0 1024x900x24" bash "$work/grid.sh"
echo "wrote $OUT/runtime_serve_chromium.png $OUT/runtime_window_xvfb.png $OUT/runtime_window_grid_xvfb.png"
