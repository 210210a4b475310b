#!/usr/bin/env bash
# Search the ensemble with the autoresearch CLI, then score the chosen config once on the
# locked test split. Usage: examples/tabular-search/run.sh [TRIALS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../../.venv/bin/python}
AR=${AUTORESEARCH:-"cargo run -q --release -p autoresearch --"}
STUDY=${STUDY:-../../target/tabular-study}
TRIALS=${1:-60}
JOBS=${2:-2}
rm -rf "$STUDY"
$AR run --space space.toml --trials "$TRIALS" --jobs "$JOBS" --maximize --pruner median \
    --seed 0 --study "$STUDY" -- "$PY" train.py
best=$($AR best --study "$STUDY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["number"])')
echo "locked test set, evaluated once for trial $best:"
"$PY" train.py --final "$STUDY/trials/$best/params.json"
