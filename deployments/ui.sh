#!/usr/bin/env bash
# Start a local Prefect server (UI on http://127.0.0.1:4200) and serve the census pipeline on it.
# Ctrl-C stops both.
set -euo pipefail
VENV=${VENV:-.venv}
WORKDIR=${WORKDIR:-runs/census}
PORT=${PREFECT_PORT:-4200}
export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false

"$VENV/bin/prefect" server start --host 127.0.0.1 --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 120); do
  if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 1
done
echo "Prefect UI: http://127.0.0.1:${PORT}  (deployments 'train_pipeline/census-retrain', 'score/census-score')"
"$VENV/bin/splitrec" serve data/census.toml --workdir "$WORKDIR"
