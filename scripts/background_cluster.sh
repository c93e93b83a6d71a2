# Sourced by scripts that drive a cluster in the background (demo.sh, study_routing.sh):
#   start_background_cluster MODEL WORKERS [coordinator flags...]
# starts scripts/launch.sh serving gRPC on a free loopback port, waits (60 s at most) until it
# listens, sets SERVER=127.0.0.1:PORT and arranges for stop_background_cluster at exit;
#   stop_background_cluster
# stops it gracefully (SIGTERM to the coordinator) and waits for the job to end.
# BG_LAUNCH_ARGS (an array, optional): more scripts/launch.sh flags, e.g. (--pin-coordinator 0).
start_background_cluster() {
  BG_MODEL=$1 BG_PORT_FILE=$(mktemp -u /tmp/moe-port.XXXXXX)
  local workers=$2
  shift 2
  scripts/launch.sh --model "$BG_MODEL" --workers "$workers" ${BG_LAUNCH_ARGS[@]+"${BG_LAUNCH_ARGS[@]}"} \
    -- --listen 127.0.0.1:0 \
    --port-file "$BG_PORT_FILE" "$@" &
  BG_LAUNCHER=$!
  trap stop_background_cluster EXIT
  for _ in $(seq 1 600); do
    [[ -f $BG_PORT_FILE ]] && break
    kill -0 "$BG_LAUNCHER" 2>/dev/null || { echo "$(basename "$0"): the cluster did not start" >&2; exit 1; }
    sleep 0.1
  done
  [[ -f $BG_PORT_FILE ]] || { echo "$(basename "$0"): the cluster did not listen within 60 s" >&2; exit 1; }
  SERVER=127.0.0.1:$(cat "$BG_PORT_FILE")
}

stop_background_cluster() {
  pkill -TERM -f "^[^ ]*moe-coordinator --model $BG_MODEL" 2>/dev/null || true
  wait "$BG_LAUNCHER" 2>/dev/null || true
  rm -f "$BG_PORT_FILE"
  trap - EXIT
}
