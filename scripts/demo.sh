#!/usr/bin/env bash
# The main job on the embedded default: installs packages, builds, makes the small demo model,
# starts the cluster (coordinator + 2 workers under mpirun, gRPC on loopback), generates through
# the command-line and the Python clients, shows the server's state, and shuts the cluster down.
# usage: scripts/demo.sh [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-"The capital of France is"}
scripts/install-deps.sh
scripts/build.sh
[[ -f models/demo/model.safetensors ]] || scripts/make_demo_model.sh

PORT_FILE=$(mktemp -u /tmp/moe-demo-port.XXXXXX)
scripts/launch.sh --model models/demo --workers 2 -- --listen 127.0.0.1:0 --port-file "$PORT_FILE" &
LAUNCHER=$!
cleanup() {
  pkill -TERM -f "^[^ ]*moe-coordinator --model models/demo" 2>/dev/null || true
  wait "$LAUNCHER" 2>/dev/null || true
  rm -f "$PORT_FILE"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  [[ -f $PORT_FILE ]] && break
  kill -0 "$LAUNCHER" 2>/dev/null || { echo "demo: the cluster did not start" >&2; exit 1; }
  sleep 0.1
done
SERVER=127.0.0.1:$(cat "$PORT_FILE")
echo
echo "--- moe-cli generate --server $SERVER --prompt \"$PROMPT\" (greedy, streamed)"
build/bin/moe-cli generate --server "$SERVER" --prompt "$PROMPT" --max-tokens 32
echo "--- moe-cli generate ... --temperature 0.8 --top-p 0.95 --seed 1"
build/bin/moe-cli generate --server "$SERVER" --prompt "$PROMPT" --max-tokens 32 --temperature 0.8 \
  --top-p 0.95 --seed 1
echo "--- scripts/client_example.py (Python, python3-grpcio)"
/usr/bin/python3 scripts/client_example.py --server "$SERVER" --prompt "$PROMPT"
echo "--- moe-cli info"
build/bin/moe-cli info --server "$SERVER"
echo "--- shutting the cluster down (SIGTERM)"
