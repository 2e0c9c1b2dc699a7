#!/usr/bin/env bash
# Create (or reuse) .venv and install metanas with the pinned constraints.
# Re-running is cheap: installation is skipped while pyproject.toml and the
# constraints are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${METANAS_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.metanas-installed"
want=$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing metanas and its dependencies (torch pinned to 2.13.0)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # torch first, alone, so nothing can pull a CUDA build in its place
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt torch==2.13.0
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt -e ".[dev,demo]"
  echo "$want" > "$stamp"
fi
