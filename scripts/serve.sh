#!/usr/bin/env bash
# Starts the cluster serving gRPC and the OpenAI-compatible HTTP API on loopback, in the foreground (Ctrl-C or SIGTERM stops it
# gracefully). The model defaults to the committed deploy/models/pystd (trained on Python code);
# --model models/demo makes the small random, router-skewed model of the balancing benchmarks first.
# usage: scripts/serve.sh [--model DIR] [--workers W] [--listen HOST:PORT] [--http HOST:PORT]
#                         [-- more coordinator flags]   (--http "": no HTTP API)
# The coordinator's flags: build/bin/moe-coordinator --help; the launcher's: scripts/launch.sh --help.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=deploy/models/pystd WORKERS=2 LISTEN=127.0.0.1:50051 HTTP=127.0.0.1:8000
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) MODEL=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --listen) LISTEN=$2; shift 2 ;;
    --http) HTTP=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ $MODEL == models/demo ]]; then
  scripts/make_demo_model.sh  # makes it if missing or out of date
fi
exec scripts/launch.sh --model "$MODEL" --workers "$WORKERS" -- --listen "$LISTEN" ${HTTP:+--http-listen "$HTTP"} "$@"
