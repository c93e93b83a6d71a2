#!/usr/bin/env bash
# The cluster with the NCCL exchange, under real mpirun, on GPUs: every rank on a GPU of its own.
# Its logits equal the MPI exchange's on the same GPUs and the single-process CUDA engine's,
# prefill and incremental; greedy generation gives the same text; auto picks NCCL, and falls back
# to MPI (or --exchange nccl fails clearly) when two ranks share a GPU; a killed worker ends the
# job within a bound. Needs 2 GPUs: without them it exits 77, which ctest shows as skipped, with
# the reason.
# usage: nccl_test.sh BIN_DIR SOURCE_DIR WORK_DIR   (PYTHON: an interpreter with numpy)
set -u
BIN=$1 SRC=$2 WORK=$3
source "$SRC/tests/integration/test_lib.sh"

gpus=$("$BIN/moe-devices" --count)
if [[ $gpus -lt 2 ]]; then
  echo "SKIP: the NCCL exchange needs 2 CUDA devices (one per rank), found $gpus: $("$BIN/moe-devices" | tail -n +3 | head -1)"
  exit 77
fi
if ! "$BIN/moe-devices" | grep -q "NCCL data plane: built"; then
  echo "FAIL: this build has CUDA devices but no NCCL data plane"
  exit 1
fi
W=$(( gpus - 1 < 4 ? gpus - 1 : 4 ))   # coordinator + W workers, one GPU each

G=$SRC/tests/golden
for model in e8_top2_bf16 swa_gqa4 f16_tied; do
  M=$G/$model
  tokens=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$M/golden.json'))['prompts'][1])))")
  for mode in prefill incremental; do
    inc=()
    [[ $mode == incremental ]] && inc=(--incremental)
    "$BIN/moe-logits" --model "$M" --device cuda --tokens "$tokens" --out "$WORK/single.npy" "${inc[@]}"
    ok=1
    for ex in nccl mpi; do
      if ! "$LAUNCH" --model "$M" --workers $W --device cuda -- --exchange $ex --tokens "$tokens" \
             --out "$WORK/$ex.npy" "${inc[@]}" >"$WORK/log-$ex.txt" 2>&1; then
        fail "$model W=$W $mode --exchange $ex: launch failed: $(tail -5 "$WORK/log-$ex.txt")"
        ok=0
      fi
    done
    [[ $ok -eq 1 ]] || continue
    if ! grep -q "exchange rows over NCCL" "$WORK/log-nccl.txt"; then
      fail "$model $mode: the nccl run did not use NCCL: $(grep 'exchange rows' "$WORK/log-nccl.txt")"
    elif r=$(compare "$WORK/nccl.npy" "$WORK/mpi.npy" 1e-6) && s=$(compare "$WORK/nccl.npy" "$WORK/single.npy" 1e-5); then
      pass "$model W=$W $mode: NCCL == MPI exchange ($r), == single-process CUDA ($s)"
    else
      fail "$model W=$W $mode: NCCL vs MPI: ${r:-?}; vs single process: ${s:-?}"
    fi
  done
done

M=$G/e8_top2_bf16
single=$("$BIN/moe-generate" --model "$M" --device cuda --prompt "The quick brown fox" --max-tokens 24)
"$LAUNCH" --model "$M" --workers $W --device cuda -- --prompt "The quick brown fox" \
  --max-tokens 24 >"$WORK/gen.txt" 2>"$WORK/log.txt"
cluster=$(grep -v -e '^moe-coordinator:' -e '^  ' "$WORK/gen.txt")
if [[ -n $single && "$single" == "$cluster" ]] && grep -q "exchange rows over NCCL.*auto" "$WORK/gen.txt"; then
  pass "auto picks NCCL; greedy generation through it == single-process CUDA"
else
  fail "generation: single '$single' vs cluster '$cluster'; $(grep 'exchange rows' "$WORK/gen.txt") $(tail -3 "$WORK/log.txt")"
fi

# More ranks than GPUs: two ranks share one, which NCCL refuses.
share=$gpus
if [[ $share -le 8 ]]; then
  "$LAUNCH" --model "$M" --workers $share --device cuda -- --tokens 1,2,3 --out "$WORK/x.npy" \
    >"$WORK/log.txt" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]] && grep -q "exchange rows over MPI.*share GPU" "$WORK/log.txt"; then
    pass "auto falls back to MPI when ranks share a GPU: $(grep -m1 'exchange rows' "$WORK/log.txt")"
  else
    fail "shared GPU with auto: exit $rc: $(grep -m1 'exchange rows' "$WORK/log.txt") $(tail -3 "$WORK/log.txt")"
  fi
  timeout 120 "$LAUNCH" --model "$M" --workers $share --device cuda -- --exchange nccl --tokens 1,2,3 \
    --out "$WORK/x.npy" >"$WORK/log.txt" 2>&1
  rc=$?
  if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "exchange nccl: ranks .* share GPU" "$WORK/log.txt"; then
    pass "--exchange nccl with a shared GPU: $(grep -m1 'share GPU' "$WORK/log.txt")"
  else
    fail "--exchange nccl with a shared GPU: exit $rc: $(tail -3 "$WORK/log.txt")"
  fi
fi

# A worker killed mid-generation: the NCCL transfers' deadline ends the job, no hang.
"$LAUNCH" --model "$M" --workers $W --device cuda -- --worker-timeout-s 2 --prompt "Once upon a time" \
  --max-tokens 6000 >"$WORK/out.txt" 2>"$WORK/log.txt" &
launcher=$!
tries=0
while ! grep -a -q "exchange rows over" "$WORK/out.txt" 2>/dev/null && [[ $tries -lt 1200 ]]; do
  sleep 0.1
  tries=$((tries + 1))
done
sleep 2
worker=$(pgrep -f "^[^ ]*moe-worker --model $M" | head -1)
if [[ -z $worker ]]; then
  fail "killed worker: the cluster was not running: $(tail -3 "$WORK/log.txt")"
  kill -KILL $launcher 2>/dev/null
else
  kill -KILL "$worker"
  t0=$SECONDS
  waited=0
  while kill -0 $launcher 2>/dev/null && [[ $waited -lt 600 ]]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 $launcher 2>/dev/null; then
    fail "killed worker: the job was still running after 60 s"
    kill -KILL $launcher 2>/dev/null
    pkill -KILL -f "model $M" 2>/dev/null
  else
    wait $launcher
    rc=$?
    if [[ $rc -ne 0 ]]; then
      pass "killed worker: the job ended $((SECONDS - t0)) s later with exit $rc: $(grep -a -m1 -e 'did not' -e 'error' "$WORK/log.txt" | cut -c1-160)"
    else
      fail "killed worker: exit 0"
    fi
  fi
fi
wait 2>/dev/null

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
