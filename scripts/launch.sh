#!/usr/bin/env bash
# Launches the cluster: one moe-coordinator (rank 0) and W moe-worker ranks, MPMD, under Open MPI.
#
# usage: scripts/launch.sh --model DIR --workers W [--hostfile F] [--placement F] [--threads N]
#                          [--device cpu|cuda] [--cpu-numerics fast|f32] [--pin-coordinator CPUS]
#                          [--quantize SPEC] [--dry-run]
#                          [--] [coordinator arguments...]
#   e.g. scripts/launch.sh --model models/demo --workers 4 -- --prompt "Hello" --max-tokens 16
#
# Flags it gives mpirun, and why:
#   --allow-run-as-root     only when run as root (containers, CI): Open MPI refuses root otherwise
#   --oversubscribe         only when there are more ranks than cores on one machine (no hostfile)
#   --bind-to none          each rank runs a thread pool; binding a rank to one core would serialise it
#   -x OMPI_MCA_mpi_yield_when_idle=1   idle ranks yield the CPU inside MPI calls
#   -x HWLOC_COMPONENTS=-gl  hwloc skips probing X displays for GPUs (each probe resolves the host
#                           name: 5 s per launch where it does not resolve)
#   --mca pml ob1 --mca btl self,vader[,tcp]   shared memory on one node (+ TCP between nodes with a
#                           hostfile): the fastest start on machines without InfiniBand
#   --mca btl self,vader,tcp    with a hostfile or inside a Slurm allocation (SLURM_JOB_ID set):
#                           shared memory within a node, TCP between nodes; Slurm names the nodes
#   --mca plm_rsh_agent false   only without a hostfile or Slurm: mpirun starts local ranks without ssh
#   OMPI_MCA_oob_tcp_keepalive_{time,intvl,probes}=5,1,3   with a hostfile or Slurm, unless set:
#                           a node that vanishes ends the job within about 10 s, not 8 minutes
#   --mca oob_tcp_if_include lo only without a hostfile: mpirun's control messages stay on loopback
#                           (on a machine whose hostname does not resolve, the lookups otherwise
#                           stall every launch by 5 s)
# Threads: --threads N for every rank; by default every rank gets every core of its machine: the
# coordinator computes while the workers wait and the other way round, and the workers, which
# compute at the same time, rarely have equal loads (routing is uneven), so the busiest one
# should be able to use the cores the others leave; idle ranks sleep. Under Slurm, each rank gets
# its task's --cpus-per-task.
# --pin-coordinator CPULIST (one machine): the coordinator on those CPUs, the workers on the rest
# (taskset), each with as many threads as its CPUs: attention and experts on disjoint cores, as on
# separate nodes or GPUs, which is where --overlap (two micro-batches in ping-pong) can pay.
# --device cuda: every rank computes on the GPU its node-local rank names (modulo the node's GPUs).
# --cpu-numerics: how every rank's CPU products treat activations (the ranks must agree).
# --quantize SPEC: every rank holds its weights so (int8, int4, or experts=int4,attention=int8,...):
#   the workers their experts, the coordinator its attention and lm_head (the ranks must agree).
# Signals: SIGTERM, SIGINT (Ctrl-C) or SIGHUP to launch.sh stop the cluster gracefully: they go to
# the coordinator alone, which drains and ends the workers (mpirun runs in a session of its own).
# Environment: MPIRUN overrides the mpirun binary; BUILD_DIR (default build) holds bin/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BUILD_DIR:-$ROOT/build}/bin
MODEL="" WORKERS="" HOSTFILE="" PLACEMENT="" THREADS="" DEVICE=cpu NUMERICS=fast DRY=0 PIN="" QUANTIZE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --model) MODEL=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --hostfile) HOSTFILE=$2; shift 2 ;;
    --placement) PLACEMENT=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --cpu-numerics) NUMERICS=$2; shift 2 ;;
    --quantize) QUANTIZE=$2; shift 2 ;;
    --pin-coordinator) PIN=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
if [[ -z $MODEL || -z $WORKERS ]]; then
  echo "launch.sh: --model and --workers are required (see --help)" >&2
  exit 2
fi
if ! [[ $WORKERS =~ ^[0-9]+$ ]] || [[ $WORKERS -lt 1 ]]; then
  echo "launch.sh: --workers must be a positive integer, got '$WORKERS'" >&2
  exit 2
fi
for b in moe-coordinator moe-worker; do
  [[ -x $BIN/$b ]] || { echo "launch.sh: $BIN/$b is missing: run scripts/build.sh" >&2; exit 2; }
done

CORES=${SLURM_CPUS_PER_TASK:-$(nproc)}  # under Slurm, each rank's share
RANKS=$((WORKERS + 1))
# hwloc's GL component looks for GPUs behind X displays (:0, :1, ...), resolving this host's name
# for each; where the name does not resolve at once (no /etc/hosts entry, a slow DNS) that stalled
# mpirun and every rank's MPI_Init by 5 s. Ranks find their GPUs through CUDA, never through X.
export HWLOC_COMPONENTS=${HWLOC_COMPONENTS:--gl}
MPI_ARGS=(--bind-to none -x OMPI_MCA_mpi_yield_when_idle=1 -x HWLOC_COMPONENTS --mca pml ob1)
[[ $(id -u) -eq 0 ]] && MPI_ARGS+=(--allow-run-as-root)
if [[ -n $HOSTFILE || -n ${SLURM_JOB_ID:-} ]]; then
  # Across nodes a host can vanish (power, cable) without a FIN: Open MPI's control connections
  # then notice only by TCP keepalive, by default after 300 s + 9 x 20 s. Probing after 5 s idle,
  # every 1 s, 3 times, mpirun learns of a lost node within about 10 s and ends the job, and the
  # other nodes' daemons end their ranks (tests/integration/multinode_test.py, the link cut).
  export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-5}
  export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-1}
  export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
fi
if [[ -n $HOSTFILE ]]; then
  MPI_ARGS+=(--hostfile "$HOSTFILE" --mca btl self,vader,tcp)
elif [[ -n ${SLURM_JOB_ID:-} ]]; then
  # Inside a Slurm allocation (deploy/slurm/): mpirun takes the nodes and slots from Slurm and
  # starts its daemons on the other nodes with srun; ranks on different nodes speak TCP.
  MPI_ARGS+=(--mca btl self,vader,tcp)
  [[ $RANKS -ne ${SLURM_NTASKS:-$RANKS} ]] && {
    echo "launch.sh: the allocation has ${SLURM_NTASKS} tasks but --workers $WORKERS needs $RANKS" >&2; exit 2; }
else
  MPI_ARGS+=(--mca btl self,vader --mca plm_rsh_agent false --mca oob_tcp_if_include lo)
  [[ $RANKS -gt $CORES ]] && MPI_ARGS+=(--oversubscribe)
fi
COORD_THREADS=${THREADS:-$CORES}
WORKER_THREADS=${THREADS:-$CORES}
COORD_PIN=() WORKER_PIN=()
if [[ -n $PIN ]]; then
  # The coordinator on CPULIST, the workers on this machine's other CPUs: attention and experts
  # on disjoint cores, as on separate nodes or GPUs (one machine only).
  [[ -n $HOSTFILE || -n ${SLURM_JOB_ID:-} ]] && { echo "launch.sh: --pin-coordinator is for one machine" >&2; exit 2; }
  ALL=$(taskset -cp $$ | sed 's/.*: //')
  REST=$(/usr/bin/python3 - "$ALL" "$PIN" <<'PY'
import sys
def cpus(spec):
    out = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out
rest = sorted(cpus(sys.argv[1]) - cpus(sys.argv[2]))
print(",".join(map(str, rest)))
PY
)
  [[ -n $REST ]] || { echo "launch.sh: --pin-coordinator $PIN leaves no CPU for the workers" >&2; exit 2; }
  COORD_PIN=(taskset -c "$PIN") WORKER_PIN=(taskset -c "$REST")
  COORD_THREADS=${THREADS:-$(taskset -c "$PIN" nproc)}
  WORKER_THREADS=${THREADS:-$(taskset -c "$REST" nproc)}
fi
COORD=(-np 1 "${COORD_PIN[@]}" "$BIN/moe-coordinator" --model "$MODEL" --threads "$COORD_THREADS" --device "$DEVICE"
       --cpu-numerics "$NUMERICS" --quantize "$QUANTIZE")
[[ -n $PLACEMENT ]] && COORD+=(--placement "$PLACEMENT")
WORKER=(-np "$WORKERS" "${WORKER_PIN[@]}" "$BIN/moe-worker" --model "$MODEL" --threads "$WORKER_THREADS" --device "$DEVICE"
        --cpu-numerics "$NUMERICS" --quantize "$QUANTIZE")
CMD=("${MPIRUN:-mpirun}" "${MPI_ARGS[@]}" "${COORD[@]}" "$@" : "${WORKER[@]}")
echo "launch.sh: ${CMD[*]}" >&2
[[ $DRY -eq 1 ]] && exit 0

# launch.sh stays as mpirun's minder, on one node as on several.
# - SIGTERM or SIGINT to launch.sh (Ctrl-C, or serve.sh's PID: serve.sh execs this script) stops
#   the cluster gracefully: it goes to the coordinator alone (before it runs, to mpirun), which
#   drains and then ends the workers. mpirun runs in a session of its own (setsid), so a
#   terminal's Ctrl-C reaches launch.sh, not mpirun: mpirun would kill every rank ~2 s later.
# - mpirun may wait for minutes on a node that vanished (its kill order sits unacknowledged in TCP,
#   where keepalive does not reach): once rank 0 (the coordinator, mpirun's own child on this node)
#   has ended, mpirun gets END_GRACE_S more seconds, then is ended; the other nodes' daemons then
#   end their ranks.
END_GRACE_S=${MOE_END_GRACE_S:-10}
setsid "${CMD[@]}" &
MPIRUN_PID=$!
# By command line: the ranks' process name (comm) is not their program's.
coordinator() { pgrep -P "$MPIRUN_PID" -f '/moe-coordinator( |$)' | head -n1; }
forward() {
  local c
  c=$(coordinator)
  kill -"$1" "${c:-$MPIRUN_PID}" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward TERM' HUP  # the terminal closed: mpirun, in its own session, would not hear of it
seen=0 ended_at=0
while kill -0 "$MPIRUN_PID" 2>/dev/null; do
  if [[ -n $(coordinator) ]]; then
    seen=1
  elif [[ $seen -eq 1 ]]; then
    [[ $ended_at -eq 0 ]] && ended_at=$SECONDS
    if (( SECONDS - ended_at >= END_GRACE_S )); then
      echo "launch.sh: the coordinator ended $END_GRACE_S s ago and mpirun still waits (for a node that" \
           "does not answer?); ending it" >&2
      kill -TERM "$MPIRUN_PID" 2>/dev/null || true
      sleep 3
      kill -KILL "$MPIRUN_PID" 2>/dev/null || true
      wait "$MPIRUN_PID" 2>/dev/null || true
      exit 1
    fi
  fi
  sleep 0.2
done
wait "$MPIRUN_PID"
