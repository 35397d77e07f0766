#!/usr/bin/env bash
# Screenshot of optuna-dashboard showing a study, with Debian's headless chromium:
#   scripts/dashboard_screenshot.sh STUDY OUT.png [RESULTS_DIR]
# Starts `nas dashboard` on a free loopback port, waits for its API, takes the screenshot, stops it.
set -euo pipefail
study=${1:?usage: $0 STUDY OUT.png [RESULTS_DIR]}
out=${2:?usage: $0 STUDY OUT.png [RESULTS_DIR]}
results=${3:-results}
nas=${NAS:-$(dirname "$0")/../.venv/bin/nas}
command -v chromium >/dev/null || { echo "needs chromium: apt-get install chromium" >&2; exit 2; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$nas" dashboard --study "$study" --port "$port" --results-dir "$results" > /tmp/nas-dashboard.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -fs "http://127.0.0.1:$port/api/studies" >/dev/null && break; sleep 0.5; done
url=$(grep -o "http://127.0.0.1:$port/dashboard/studies/[0-9]*" /tmp/nas-dashboard.log)
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
  --virtual-time-budget=15000 --screenshot="$out" "$url" 2>/dev/null
test -s "$out" && echo "written: $out ($url)"
