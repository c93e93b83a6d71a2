#!/usr/bin/env bash
# The routing study of the trained default model (README "Routing of the trained model"): serves
# deploy/models/pystd on W workers with a routing trace, feeds it the held-out Python files of its
# training split (deploy/models/pystd/training.json; from Debian's python3.11 packages) as
# labelled requests, saves the live telemetry, stops the cluster and runs scripts/routing_study.py
# on the trace against that telemetry.
# usage: scripts/study_routing.sh [--workers W] [--out DIR] [--files N] [--prompt-chars C]
#                                 [--max-tokens T] [--concurrency K]
#   defaults: 4 workers, docs/study, every held-out file, 3000 characters, 64 tokens, 8 at a time
# Needs a build (scripts/build.sh).
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=deploy/models/pystd WORKERS=4 OUT=docs/study FILES=0 CHARS=3000 TOKENS=64 CONC=8
while [[ $# -gt 0 ]]; do
  case $1 in
    --workers) WORKERS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --prompt-chars) CHARS=$2; shift 2 ;;
    --max-tokens) TOKENS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    *) echo "study_routing.sh: unknown argument $1 (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
mapfile -t HELD_OUT < <(/usr/bin/python3 -c "
import json, os, sys
files = [f for f in json.load(open('$MODEL/training.json'))['corpus']['held_out_files'] if os.path.isfile(f)]
n = int(sys.argv[1])
print('\n'.join(files[:n] if n > 0 else files))" "$FILES")
if [[ ${#HELD_OUT[@]} -eq 0 ]]; then
  echo "study_routing.sh: none of the held-out files named in $MODEL/training.json is on this machine" >&2
  exit 1
fi
echo "study: ${#HELD_OUT[@]} held-out files, $WORKERS workers, into $OUT"

TRACE=$OUT/heldout.trace
source scripts/background_cluster.sh
start_background_cluster "$MODEL" "$WORKERS" --routing-trace "$TRACE"
/usr/bin/python3 scripts/study_feed.py --server "$SERVER" --label heldout-python --files "${HELD_OUT[@]}" \
  --prompt-chars "$CHARS" --max-tokens "$TOKENS" --concurrency "$CONC" --live "$OUT/live.json" | tail -3
stop_background_cluster
/usr/bin/python3 scripts/routing_study.py "$TRACE" --tokenizer "$MODEL/tokenizer.model" --live "$OUT/live.json" \
  --out "$OUT" --json "$OUT/study.json" --title "pystd, held-out Python, $WORKERS workers"
