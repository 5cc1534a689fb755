#!/usr/bin/env bash
# Create the LocalStack virtualenv (default .venv-localstack) with LocalStack 4.14.0 on Python 3.13.
# Idempotent: a venv whose stamp matches constraints.txt is reused. Prints the venv path last.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${LOCALSTACK_VENV:-$ROOT/.venv-localstack}"
STAMP="$VENV/.installed"

find_python() {
  local candidates=()
  [[ -n "${LOCALSTACK_PYTHON:-}" ]] && candidates+=("$LOCALSTACK_PYTHON")
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)/versions/3.13.0/bin/python3.13")
  fi
  candidates+=(python3.13)
  for p in "${candidates[@]}"; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

if [[ -f "$STAMP" ]] && cmp -s "$STAMP" "$HERE/constraints.txt" && [[ -x "$VENV/bin/python" ]]; then
  echo "$VENV"; exit 0
fi
PY="$(find_python)" || { echo "localstack setup: Python 3.13 not found (set LOCALSTACK_PYTHON)" >&2; exit 1; }
echo "localstack setup: creating $VENV with $PY" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet -c "$HERE/constraints.txt" \
  'localstack-core[runtime]==4.14.0' service_identity 'cbor2<5.8' 'pyopenssl<24.3' 'cryptography<44' >&2
cp "$HERE/constraints.txt" "$STAMP"
echo "$VENV"
