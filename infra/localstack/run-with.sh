#!/usr/bin/env bash
# Run a command with a private LocalStack: start it on a free port, export its endpoint as
# SHELFWISE_LOCALSTACK_ENDPOINT (and SHELFWISE_BACKEND=localstack), run, always stop it.
#   infra/localstack/run-with.sh COMMAND [ARGS...]
# With LOCALSTACK_OPTIONAL=1, a LocalStack that cannot be installed or started prints a loud
# warning and exits 0 (make test); otherwise that is an error (make e2e BACKEND=localstack).
# A command that fails always fails this script.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="${LOCALSTACK_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
if ! URL="$(bash "$HERE/start.sh" "$PORT")"; then
  if [[ "${LOCALSTACK_OPTIONAL:-0}" == "1" ]]; then
    {
      echo "################################################################################"
      echo "## WARNING: LocalStack could not be installed or started on this machine."
      echo "## The LocalStack leg of the integration + e2e suites DID NOT RUN."
      echo "## See the messages above; try: make localstack"
      echo "################################################################################"
    } >&2
    exit 0
  fi
  echo "LocalStack could not be started; the LocalStack leg FAILED" >&2
  exit 1
fi
trap 'bash "$HERE/stop.sh" "$PORT"' EXIT
export SHELFWISE_BACKEND=localstack SHELFWISE_LOCALSTACK_ENDPOINT="$URL"
"$@"
