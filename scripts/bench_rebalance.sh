#!/usr/bin/env bash
# Live re-placement on a serving cluster, before and after: starts the server on MODEL with W
# workers and SLOTS expert slots per worker per layer, runs `moe-cli bench` (16 clients) under the
# contiguous default placement, then again while `moe-cli rebalance` moves the experts in the
# middle of it (workers load in the background; every rank switches at one step boundary), then
# once more under the new placement. Prints each bench line, the re-placement (slots moved, the
# background load time, the switch pause), and the server's worker balancedness and straggler
# cost per layer-step under each placement (from GetLoad: measured, not predicted). A benchmark,
# not a test: it judges nothing.
#   usage: scripts/bench_rebalance.sh MODEL_DIR WORKERS [SLOTS]
#   e.g.   scripts/bench_rebalance.sh models/demo 2
# SLOTS defaults to ceil(E/W) + 1. THREADS=N gives every rank N threads (scripts/launch.sh
# --threads); REQUESTS=N requests per client per bench (default 4); TOKENS=N tokens per request
# (default 32).
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/bench_rebalance.sh MODEL_DIR WORKERS [SLOTS]}
W=${2:?usage: scripts/bench_rebalance.sh MODEL_DIR WORKERS [SLOTS]}
E=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_local_experts"])' "$MODEL/config.json")
SLOTS=${3:-$(( (E + W - 1) / W + 1 ))}
BIN=${BUILD_DIR:-build}/bin
WORK=$(mktemp -d)
cleanup() {
  [[ -n ${SERVER:-} ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

scripts/launch.sh --model "$MODEL" --workers "$W" ${THREADS:+--threads "$THREADS"} -- \
  --listen 127.0.0.1:0 --port-file "$WORK/port" --expert-slots "$SLOTS" --worker-timeout-s 120 \
  --max-batch-tokens 1024 >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 600); do [[ -s $WORK/port ]] && break; kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
[[ -s $WORK/port ]] || { echo "bench_rebalance: the server did not start:" >&2; tail -5 "$WORK/server.log" >&2; exit 1; }
ADDR=127.0.0.1:$(cat "$WORK/port")
CLI=("$BIN/moe-cli" --server "$ADDR")
BENCH=(bench --concurrency 16 --requests "${REQUESTS:-4}" --max-tokens "${TOKENS:-32}" --prompt-tokens 32)

# load NAME: the server's measured worker balancedness and straggler cost since the last reset.
load() {
  "${CLI[@]}" load --once >"$WORK/$1.load"
  /usr/bin/python3 - "$ADDR" "$1" "${BUILD_DIR:-build}/python" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[3])
import grpc
from moe.v1 import telemetry_pb2 as t, telemetry_pb2_grpc as tg
s = tg.TelemetryStub(grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])).GetLoad(t.GetLoadRequest())
per = 1e3 * s.straggler_seconds / max(1, s.exchanges)
print(f"{sys.argv[2]:>7}: placement epoch {s.placement.epoch}, worker balancedness {s.worker_imbalance.balancedness:.3f}, "
      f"straggler {per:.3f} ms per layer-step ({s.exchanges} exchanges), shares "
      + " ".join(f"{100 * w.routed_tokens / max(1, sum(x.routed_tokens for x in s.workers)):.0f}%" for w in s.workers))
PYEOF
}

echo "model $MODEL, $W workers, $SLOTS slots per worker${THREADS:+, $THREADS threads per rank}, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "before (contiguous placement):"
"${CLI[@]}" "${BENCH[@]}" | tail -1
load before
echo "during (moe-cli rebalance in the middle of the bench):"
"${CLI[@]}" "${BENCH[@]}" >"$WORK/during.txt" &
BENCH_PID=$!
sleep 1
"${CLI[@]}" rebalance
wait "$BENCH_PID"
tail -1 "$WORK/during.txt"
echo "after:"
"${CLI[@]}" "${BENCH[@]}" | tail -1
load after
grep -A$((2 + $(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"])' "$MODEL/config.json"))) '^placement epoch' "$WORK/after.load"
