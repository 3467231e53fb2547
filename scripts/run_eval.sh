#!/usr/bin/env bash
# Full evaluation on the shared benchmark (about 15 minutes on 2 CPU cores).
# Usage: scripts/run_eval.sh [OUT_DIR] [extra options for `provenance eval`...]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/eval}"
shift || true
bench="${PROVENANCE_BENCH:-../shared/bench}"
exec .venv/bin/python -m provenance.cli_eval \
    --refs "$bench/refs.csv" --negatives "$bench/negatives.csv" --out "$out" "$@"
