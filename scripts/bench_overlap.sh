#!/usr/bin/env bash
# Two micro-batches in ping-pong (--overlap), measured both ways in one sitting: for each round,
# every mode in turn (off, on, auto; alternating, because these machines drift),
#   1. moe-bench through the cluster (moe-coordinator --bench --batch BATCH): prefill and decode
#      tokens/s per batch, and the coordinator's own "at most Nx" bound for overlap;
#   2. a serving cluster under `moe-cli bench --concurrency CONCURRENCY`: tokens/s per concurrency.
# Then the median of the rounds per mode and each mode's ratio to off. A benchmark, not a test: it
# judges nothing.
#   usage: scripts/bench_overlap.sh MODEL_DIR [ROUNDS]     (ROUNDS default 2)
#   e.g.   scripts/bench_overlap.sh models/demo 3
# Environment: WORKERS (1), PIN (coordinator CPUs for launch.sh --pin-coordinator, the workers get
# the rest; default 0; PIN= runs unpinned), BATCH (1,16,64), PROMPT (32 prompt tokens),
# DECODE (32 decode steps), CONCURRENCY (1,16,64), REQUESTS (2 per client), MODES ("off on auto"),
# SERVING (1; 0 skips part 2).
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/bench_overlap.sh MODEL_DIR [ROUNDS]}
ROUNDS=${2:-2}
WORKERS=${WORKERS:-1} PIN=${PIN-0} BATCH=${BATCH:-1,16,64} PROMPT=${PROMPT:-32} DECODE=${DECODE:-32}
CONCURRENCY=${CONCURRENCY:-1,16,64} REQUESTS=${REQUESTS:-2} MODES=${MODES:-off on auto} SERVING=${SERVING:-1}
BIN=${BUILD_DIR:-build}/bin
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
source scripts/background_cluster.sh
BG_LAUNCH_ARGS=(${PIN:+--pin-coordinator "$PIN"})
LAUNCH=(scripts/launch.sh --model "$MODEL" --workers "$WORKERS" "${BG_LAUNCH_ARGS[@]}")

echo "model $MODEL, $WORKERS workers, coordinator on CPUs ${PIN:-any} (workers on the rest), $ROUNDS rounds;" \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(date -u +%F)"
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    "${LAUNCH[@]}" -- --bench --batch "$BATCH" --bench-prompt-tokens "$PROMPT" --bench-decode-tokens "$DECODE" \
      --overlap "$mode" --worker-timeout-s 600 >"$WORK/bench-$mode-$round.log" 2>&1 ||
      { echo "bench_overlap: --bench --overlap $mode failed:" >&2; tail -5 "$WORK/bench-$mode-$round.log" >&2; exit 1; }
    grep -E '^batch [0-9]+ (prefill|decode):' "$WORK/bench-$mode-$round.log" |
      sed -E "s/^batch ([0-9]+) (prefill|decode):.* = ([0-9.]+) tokens\/s.*/bench \1 \2 $mode $round \3/" >>"$WORK/figures"
    awk -v tag="[$mode, round $round]" '/^batch [0-9]+ prefill:/ {batch = $1 " " $2}
      /^  (prefill|decode) overlap: .*at most/ {sub(/^  /, ""); print "    " tag " " batch " " $0}' \
      "$WORK/bench-$mode-$round.log" >>"$WORK/bounds"
    if [[ $SERVING == 1 ]]; then
      start_background_cluster "$MODEL" "$WORKERS" --overlap "$mode" --worker-timeout-s 600 \
        >"$WORK/server-$mode-$round.log" 2>&1
      "$BIN/moe-cli" bench --server "$SERVER" --concurrency "$CONCURRENCY" \
        --requests "$REQUESTS" --prompt-tokens "$PROMPT" --max-tokens "$DECODE" >"$WORK/cli-$mode-$round.txt"
      awk -v m="$mode" -v r="$round" '$1 ~ /^[0-9]+$/ && NF >= 8 {print "serve", $1, "clients", m, r, $3}' \
        "$WORK/cli-$mode-$round.txt" >>"$WORK/figures"
      stop_background_cluster
      trap 'rm -rf "$WORK"' EXIT  # stop_background_cluster cleared it
      grep -A20 "timed these kinds" "$WORK/server-$mode-$round.log" | grep -E "timed these|tokens:" | sed "s/^/    [serving, $mode, round $round] /" \
        >>"$WORK/learned" || true
    fi
    echo "  round $round, --overlap $mode: done" >&2
  done
done

/usr/bin/python3 - "$WORK/figures" "$MODES" <<'PYEOF'
import collections, statistics, sys
runs = {}  # (what, size, phase) -> mode -> {round: tokens/s}
for line in open(sys.argv[1]):
    what, size, phase, mode, rnd, tps = line.split()
    runs.setdefault((what, int(size), phase), collections.defaultdict(dict))[mode][int(rnd)] = float(tps)
modes = sys.argv[2].split()
others = [m for m in modes if m != "off"]
print(f"{'':28}" + "".join(f"{m:>16}" for m in modes) + "".join(f"{m + '/off, per round':>30}" for m in others))
for (what, size, phase), by_mode in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
    name = f"moe-bench batch {size} {phase}" if what == "bench" else f"moe-cli bench {size} clients"
    cells = "".join(f"{statistics.median(by_mode[m].values()):>10.1f} tok/s" if by_mode.get(m) else f"{'':>16}"
                    for m in modes)
    ratios = ""
    for m in others:
        r = sorted(by_mode[m][k] / by_mode["off"][k] for k in by_mode.get(m, {}) if k in by_mode.get("off", {}))
        ratios += (f"{statistics.median(r):>14.2f}x ({r[0]:.2f}-{r[-1]:.2f})" if r else f"{'':>30}")
    print(f"{name:28}{cells}{ratios}")
print("(tokens/s: the median of the rounds; ratios: the median of each round's ratio, and their range)")
PYEOF
if [[ -s $WORK/bounds ]]; then echo "the coordinator's bound on what overlap could gain, from its whole steps:"; sort -u "$WORK/bounds" | grep -F "[off," || true; fi
if [[ -s $WORK/learned ]]; then echo "what --overlap auto chose while serving:"; cat "$WORK/learned"; fi
