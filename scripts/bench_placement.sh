#!/usr/bin/env bash
# Load balancing before and after, on a router-skewed model: runs the cluster's benchmark with the
# default contiguous placement, plans a placement with replicas from that run's routing trace
# (scripts/plan_placement.py), runs the benchmark again under it, and prints one line per run:
# worker balancedness (the trace replayed under the placement with the runtime's split rule,
# scripts/analyze_routing.py), the straggler cost and the exchange time per layer, and the
# prefill and decode speed. A benchmark, not a test: it prints figures and judges nothing.
#   usage: scripts/bench_placement.sh MODEL_DIR WORKERS [SLOTS] [-- BENCH ARGS...]
#   e.g.   scripts/bench_placement.sh models/demo 2
# SLOTS: expert slots per worker per layer for the plan (default: ceil(E/W) + 1). THREADS=N in
# the environment gives every rank N threads (scripts/launch.sh --threads): on a machine with
# fewer cores than workers x threads the workers share cores, and a balanced step then cannot
# finish sooner than an unbalanced one (the cores, not the busiest worker, bound it).
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/bench_placement.sh MODEL_DIR WORKERS [SLOTS] [-- BENCH ARGS...]}
W=${2:?usage: scripts/bench_placement.sh MODEL_DIR WORKERS [SLOTS] [-- BENCH ARGS...]}
shift 2
SLOTS=""
if [[ $# -gt 0 && $1 != "--" ]]; then SLOTS=$1; shift; fi
[[ $# -gt 0 && $1 == "--" ]] && shift
BENCH=(--bench --batch 16 --bench-prompt-tokens 64 --bench-decode-tokens 16 --worker-timeout-s 120)
[[ $# -gt 0 ]] && BENCH=(--bench --worker-timeout-s 120 "$@")
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# run NAME [COORDINATOR ARGS...]: one benchmark through the cluster, its trace in $WORK/NAME.trace.
run() {
  local name=$1
  shift
  scripts/launch.sh --model "$MODEL" --workers "$W" ${THREADS:+--threads "$THREADS"} -- "${BENCH[@]}" "$@" \
    --routing-trace "$WORK/$name.trace" >"$WORK/$name.log" 2>&1 ||
    { echo "bench_placement: the $name run failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
}

# report NAME PLACEMENT_JSON|"": the figures of one run on one line.
report() {
  local name=$1 placement=$2
  local args=("$WORK/$name.trace" --json "$WORK/$name.json" --out "$WORK")
  [[ -n $placement ]] && args+=(--placement "$placement")
  "$PY" scripts/analyze_routing.py "${args[@]}" >/dev/null
  "$PY" - "$WORK/$name.json" "$WORK/$name.log" "$name" <<'EOF'
import json, re, sys
figures, log, name = json.load(open(sys.argv[1])), open(sys.argv[2]).read(), sys.argv[3]
replay = figures.get("placement_replay")
bal = (replay["worker_imbalance"] if replay else figures["worker_imbalance"])["overall"]["balancedness"]
out = [f"{name:>6}: worker balancedness {bal:.3f}"]
for phase in ("prefill", "decode"):
    speed = re.search(rf"^batch \d+ {phase}: .*?= ([\d.]+) tokens/s", log, re.M)
    ex = re.search(rf"{phase} exchange per layer: ([\d.]+) ms wall = ([\d.]+) ms slowest", log)
    workers = re.search(rf"{phase} per worker \(rows, expert ms per layer\):(.*)", log)
    ms = [float(x) for x in re.findall(r"\[\d+\] \d+, ([\d.]+)", workers.group(1))] if workers else []
    straggler = max(ms) - sum(ms) / len(ms) if ms else float("nan")
    out.append(f"{phase} {float(speed.group(1)):.1f} tok/s, exchange {float(ex.group(1)):.2f} ms/layer "
               f"(slowest worker {float(ex.group(2)):.2f} ms, straggler {straggler:.2f} ms)")
print("; ".join(out))
EOF
}

echo "model $MODEL, $W workers${THREADS:+, $THREADS threads per rank}, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
run before
plan_args=("$WORK/before.trace" --workers "$W" --out "$WORK/placement.json")
[[ -n $SLOTS ]] && plan_args+=(--slots "$SLOTS")
"$PY" scripts/plan_placement.py "${plan_args[@]}" | grep -E '^worker balancedness' || true
S=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["expert_slots"])' "$WORK/placement.json")
run after --placement "$WORK/placement.json" --expert-slots "$S"
report before ""
report after "$WORK/placement.json"
echo "placement ($S slots per worker per layer):"
cat "$WORK/placement.json"
