#!/usr/bin/env bash
# Start LocalStack 4.14 in host mode (no Docker, no auth token) and wait until it answers.
#   infra/localstack/start.sh [PORT]      (default 4566; LOCALSTACK_PORT also works)
# State lives in .localstack/<port>/ (pid, log, TMPDIR): each instance gets its own TMPDIR,
# because host-mode instances otherwise share /tmp/localstack and delete it on shutdown.
# Prints the endpoint URL last; exits non-zero (and shows the log tail) if it does not start.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${1:-${LOCALSTACK_PORT:-4566}}"
VENV="$(bash "$HERE/setup.sh")"
STATE="$ROOT/.localstack/$PORT"
URL="http://127.0.0.1:$PORT"
mkdir -p "$STATE/tmp"
if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
  echo "localstack: already running on $URL (pid $(cat "$STATE/pid"))" >&2
  echo "$URL"; exit 0
fi
if curl -fsS -o /dev/null "$URL/_localstack/health" 2>/dev/null; then
  echo "localstack: port $PORT already answers but is not ours; pick another port" >&2; exit 1
fi
T0=$(date +%s.%N)
(
  cd "$STATE"
  exec env TMPDIR="$STATE/tmp" GATEWAY_LISTEN="127.0.0.1:$PORT" LOCALSTACK_CLI=0 DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_VOLUME_DIR="$STATE/volume" \
    "$VENV/bin/python" -m localstack.runtime.main >"$STATE/localstack.log" 2>&1
) &
echo $! >"$STATE/pid"
for _ in $(seq 1 240); do
  if curl -fsS -o /dev/null "$URL/_localstack/health" 2>/dev/null; then
    echo "localstack: ready on $URL in $(echo "$(date +%s.%N) - $T0" | bc) s (pid $(cat "$STATE/pid"))" >&2
    echo "$URL"; exit 0
  fi
  if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then break; fi
  sleep 0.25
done
echo "localstack: FAILED to start on $URL; last log lines:" >&2
tail -n 30 "$STATE/localstack.log" >&2 || true
bash "$HERE/stop.sh" "$PORT" >/dev/null 2>&1 || true
exit 1
