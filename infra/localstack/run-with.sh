#!/usr/bin/env bash
# Run a command with a private LocalStack: start it on a free port, export its endpoint as
# SHELFWISE_LOCALSTACK_ENDPOINT (and SHELFWISE_BACKEND=localstack), run, always stop it.
#   infra/localstack/run-with.sh COMMAND [ARGS...]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="${LOCALSTACK_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
URL="$(bash "$HERE/start.sh" "$PORT")"
trap 'bash "$HERE/stop.sh" "$PORT"' EXIT
export SHELFWISE_BACKEND=localstack SHELFWISE_LOCALSTACK_ENDPOINT="$URL"
"$@"
