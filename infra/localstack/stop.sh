#!/usr/bin/env bash
# Stop the LocalStack started by start.sh on PORT (default 4566), by its pid only.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${1:-${LOCALSTACK_PORT:-4566}}"
STATE="$ROOT/.localstack/$PORT"
[[ -f "$STATE/pid" ]] || { echo "localstack: nothing started on port $PORT" >&2; exit 0; }
PID="$(cat "$STATE/pid")"
if kill -0 "$PID" 2>/dev/null; then
  kill -TERM "$PID"
  for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null || true
fi
rm -f "$STATE/pid"
echo "localstack: stopped (pid $PID, port $PORT)" >&2
