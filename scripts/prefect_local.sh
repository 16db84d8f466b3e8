#!/usr/bin/env bash
# A local Prefect stack for the deployments of prefect.yaml (work pool + process worker):
#   up      server on 127.0.0.1 (analytics off, state in $PREFECT_HOME), wait until healthy,
#           work pool `local-process`, `prefect deploy --all`, a process worker in the background
#   down    stop the worker (and the flow runs it started) and the server
# Then: prefect deployment run train-dore/docred --watch   (with PREFECT_API_URL as printed by `up`)
# Settings: PREFECT_HOME (default .prefect), PREFECT_PORT (4200), VENV (.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"
PREFECT="$VENV/bin/prefect"
PYTHON="$VENV/bin/python"
PORT="${PREFECT_PORT:-4200}"
POOL=local-process

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}"  # pick up runs within ~2 s
export DORE_ROOT="$ROOT"  # prefect.yaml's pull step: the worker runs the flow in this checkout
WORKER_PID="$PREFECT_HOME/worker.pid"

wait_healthy() {
  local deadline=$((SECONDS + ${PREFECT_STARTUP_TIMEOUT:-120}))
  until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "$PREFECT_API_URL/health" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "prefect server not healthy at $PREFECT_API_URL" >&2
      return 1
    fi
    sleep 0.5
  done
}

up() {
  mkdir -p "$PREFECT_HOME"
  "$PREFECT" server start --background --host 127.0.0.1 --port "$PORT" --analytics-off --no-ui
  wait_healthy
  "$PREFECT" work-pool create "$POOL" --type process --overwrite
  # Prefect's per-deployment advice ("start a worker", "to schedule a run") goes to the log: the worker
  # starts just below.
  if ! "$PREFECT" --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1; then
    cat "$PREFECT_HOME/deploy.log" >&2
    return 1
  fi
  grep -oE "Deployment '[^']+'" "$PREFECT_HOME/deploy.log" | sed "s/^/deployed: /" || true
  nohup "$PREFECT" worker start --pool "$POOL" --type process >"$PREFECT_HOME/worker.log" 2>&1 &
  echo $! >"$WORKER_PID"
  echo "Prefect API $PREFECT_API_URL, worker pid $(cat "$WORKER_PID") (log $PREFECT_HOME/worker.log)"
  echo "export PREFECT_API_URL=$PREFECT_API_URL PREFECT_HOME=$PREFECT_HOME"
  echo "prefect deployment run train-dore/docred --watch   # writes runs/<time>/, never artifacts/"
}

descendants() {  # every process below $1 (flow runs get a session of their own: a group kill misses them)
  "$PYTHON" -c 'import psutil, sys; print(*(c.pid for c in psutil.Process(int(sys.argv[1])).children(recursive=True)))' \
    "$1" 2>/dev/null || true
}

down() {
  if [[ -f "$WORKER_PID" ]]; then  # before the server: a stopping worker still reports to it
    local pid pids deadline=$((SECONDS + 5))
    pid="$(cat "$WORKER_PID")"
    pids="$pid $(descendants "$pid")"
    kill -TERM $pids 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    kill -KILL $pids 2>/dev/null || true
    rm -f "$WORKER_PID"
  fi
  "$PREFECT" server stop
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
