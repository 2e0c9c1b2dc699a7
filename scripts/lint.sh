#!/usr/bin/env bash
# Set up (if needed) and run the static checks: ruff lint (with a McCabe complexity limit of 15)
# and format, the structure limits (modules <= 600 lines, functions <= 80), and the import layers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check metanas tests scripts
.venv/bin/ruff format --check metanas tests scripts
.venv/bin/python scripts/check_structure.py
.venv/bin/lint-imports
