#!/usr/bin/env bash
# The main job on the embedded default: installs packages, builds, starts the cluster on the
# committed model deploy/models/pystd (a small Mixtral trained on Python code; its MODEL_CARD.md
# says what it is), coordinator + 2 workers under mpirun, gRPC on loopback; continues a few
# Python prompts through the command-line and the Python clients, shows the server's state and
# its load telemetry (the live view, then the routing trace analysed offline), and shuts the
# cluster down. The OpenAI-compatible HTTP API runs beside gRPC and answers curl.
# usage: scripts/demo.sh [PROMPT]   (PROMPT replaces the built-in Python prompts)
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=deploy/models/pystd
if [[ $# -gt 0 ]]; then
  PROMPTS=("$1")
else
  PROMPTS=($'    if not isinstance(' $'try:\n    import' $'def read_config(path):\n    """')
fi
PROMPT=${PROMPTS[-1]}
scripts/install-deps.sh
scripts/build.sh

OUT=build/demo  # the routing trace and its plots
mkdir -p "$OUT"
source scripts/background_cluster.sh
HTTP_PORT_FILE=$(mktemp -u /tmp/moe-http-port.XXXXXX)
start_background_cluster "$MODEL" 2 --routing-trace "$OUT/routing.trace" --http-listen 127.0.0.1:0 \
  --http-port-file "$HTTP_PORT_FILE"
HTTP=http://127.0.0.1:$(cat "$HTTP_PORT_FILE")  # written with the gRPC port's file
rm -f "$HTTP_PORT_FILE"
echo
for P in "${PROMPTS[@]}"; do
  echo "--- moe-cli generate --server $SERVER --prompt \$'${P//$'\n'/\\n}' --max-tokens 40"
  echo "    (greedy, streamed; the prompt is printed first, the model's text follows it)"
  printf '%s' "$P"
  build/bin/moe-cli generate --server "$SERVER" --prompt "$P" --max-tokens 40
done
echo "--- moe-cli generate ... --temperature 0.7 --top-p 0.9 --seed 2 (the last prompt, sampled)"
printf '%s' "$PROMPT"
build/bin/moe-cli generate --server "$SERVER" --prompt "$PROMPT" --max-tokens 40 --temperature 0.7 \
  --top-p 0.9 --seed 2
echo "--- curl $HTTP/v1/completions (the OpenAI-compatible HTTP API, same scheduler)"
curl -sS "$HTTP/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "pystd", "prompt": "import os\nimport", "max_tokens": 16, "temperature": 0}'
echo
echo "--- curl -N $HTTP/v1/chat/completions with \"stream\": true (server-sent events: the first 3 and the last)"
curl -sS -N "$HTTP/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "pystd", "messages": [{"role": "user", "content": "def add(a, b):"}], "max_tokens": 12,
       "temperature": 0, "stream": true}' | grep -v '^$' | sed -n '1,3p;$p' | sed '3a\...'
echo "--- scripts/client_example.py (Python, python3-grpcio)"
/usr/bin/python3 scripts/client_example.py --server "$SERVER" --prompt "$PROMPT"
echo "--- moe-cli info"
build/bin/moe-cli info --server "$SERVER"
echo "--- moe-cli bench --concurrency 8 (some load to look at)"
build/bin/moe-cli bench --server "$SERVER" --concurrency 8 --requests 2 --max-tokens 32
sleep 1  # one worker report interval (500 ms), so the workers' own counts have caught up
echo "--- moe-cli load --once (live: moe-cli load, refreshing like top)"
build/bin/moe-cli load --server "$SERVER" --once
echo "--- scripts/analyze_routing.py $OUT/routing.trace (every token's routing, recorded by --routing-trace)"
/usr/bin/python3 scripts/analyze_routing.py "$OUT/routing.trace" --out "$OUT"
echo "--- shutting the cluster down (SIGTERM)"
