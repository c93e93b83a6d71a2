#!/usr/bin/env bash
# The cluster under real mpirun: the distributed logits equal the single-process tool's for every
# worker count, a non-contiguous placement and placements with replicas (and slot budgets),
# greedy and seeded generation give the same text,
# bad placements, broken workers and an unusable --exchange give clear errors, and a dead, hung or
# signalled run ends within a bound instead of hanging.
# usage: cluster_test.sh BIN_DIR SOURCE_DIR WORK_DIR   (PYTHON: an interpreter with numpy)
set -u
BIN=$1 SRC=$2 WORK=$3
source "$SRC/tests/integration/test_lib.sh"

# logits_case NAME MODEL WORKERS [PLACEMENT [COORDINATOR-ARGS [TOKENS [LOG-PATTERN]]]]: prefill and
# incremental, cluster vs single process. TOKENS (--tokens) defaults to the golden's second prompt;
# LOG-PATTERN, when given, must appear in the cluster's output. QUANTIZE (environment), when set,
# is both sides' --quantize.
logits_case() {
  local name=$1 model=$2 workers=$3 placement=${4:-}
  local coord=(${5:-})
  local tokens=${6:-} pattern=${7:-}
  [[ -n $tokens ]] ||
    tokens=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$model/golden.json'))['prompts'][1])))")
  local extra=() quant=()
  [[ -n $placement ]] && extra=(--placement "$placement")
  [[ -n ${QUANTIZE:-} ]] && quant=(--quantize "$QUANTIZE")
  for mode in prefill incremental; do
    local inc=()
    [[ $mode == incremental ]] && inc=(--incremental)
    "$BIN/moe-logits" --model "$model" --tokens "$tokens" --out "$WORK/single.npy" "${inc[@]}" "${quant[@]}"
    if "$LAUNCH" --model "$model" --workers "$workers" "${extra[@]}" "${quant[@]}" -- "${coord[@]}" --tokens "$tokens" \
         --out "$WORK/cluster.npy" "${inc[@]}" >"$WORK/log.txt" 2>&1; then
      if [[ -n $pattern ]] && ! grep -q -- "$pattern" "$WORK/log.txt"; then
        fail "$name W=$workers $mode: the cluster's output lacks '$pattern': $(tail -3 "$WORK/log.txt")"
      elif r=$(compare "$WORK/cluster.npy" "$WORK/single.npy"); then
        pass "$name W=$workers $mode: cluster == single process ($r)${pattern:+; $(grep -m1 -- "$pattern" "$WORK/log.txt")}"
      else
        fail "$name W=$workers $mode: $r"
      fi
    else
      fail "$name W=$workers $mode: launch failed: $(tail -5 "$WORK/log.txt")"
    fi
  done
}

G=$SRC/tests/golden
for w in ${CLUSTER_TEST_WORKERS-1 2 3 4 8}; do logits_case e8_top2_bf16 "$G/e8_top2_bf16" $w; done
# Non-contiguous, different per layer, uneven (worker 3 hosts 4 experts of layer 0, 1 of layer 1).
cat >"$WORK/placement.json" <<'JSON'
{"layers": [[3, 1, 3, 2, 3, 1, 3, 2],
            [2, 1, 2, 1, 2, 1, 3, 1]]}
JSON
logits_case swa_gqa4 "$G/swa_gqa4" 3 "$WORK/placement.json"
logits_case f16_tied "$G/f16_tied" 4   # 6 experts over 4 workers: 2, 2, 1, 1

# Replicas: each replicated expert's rows are split over its slots by load; the logits must not
# notice. Every expert on both workers, 8 slots each (the budget exactly).
cat >"$WORK/replicas-all.json" <<'JSON'
{"experts": [[1, 2], [2, 1], [1, 2], [2, 1], [1, 2], [2, 1], [1, 2], [2, 1]]}
JSON
logits_case "e8_top2_bf16 every expert on both workers" "$G/e8_top2_bf16" 2 "$WORK/replicas-all.json" \
  "--expert-slots 8"
# A few hot experts replicated, uneven slots per worker (5, 3, 4) under an uneven budget of 5.
cat >"$WORK/replicas-hot.json" <<'JSON'
{"experts": [[1, 2, 3], 1, [2, 3], 2, 3, [3, 1], 1, 1]}
JSON
logits_case "swa_gqa4 hot experts replicated" "$G/swa_gqa4" 3 "$WORK/replicas-hot.json" "--expert-slots 5"
# Per layer, with the budget in the file (deploy's example, on the 8-expert model), and a top-3
# model whose replicas differ per layer.
logits_case "e8_top2_bf16 per-layer replicas (deploy example)" "$G/e8_top2_bf16" 4 \
  "$SRC/deploy/placement.replicas.example.json"
cat >"$WORK/replicas-layers.json" <<'JSON'
{"expert_slots": 3,
 "layers": [[[1, 2], 3, [4, 1], 2, [3, 4, 1], 4],
            [1, [2, 3, 4], 2, 3, 4, [1, 2]]]}
JSON
logits_case "f16_tied per-layer replicas" "$G/f16_tied" 4 "$WORK/replicas-layers.json" "--expert-slots 3"

# Two micro-batches in ping-pong (--overlap on): four sequences of different lengths in one batch,
# every step split in two (the single process runs them whole); then with replicas, whose split
# rule is applied to each micro-batch apart.
four=$("$PY" -c "import json; p = json.load(open('$G/e8_top2_bf16/golden.json'))['prompts']
print(';'.join(','.join(map(str, x)) for x in p + [p[1][::-1]]))")
logits_case "e8_top2_bf16 4 sequences --overlap on" "$G/e8_top2_bf16" 3 "" "--overlap on" "$four" \
  "steps ran as two micro-batches"
logits_case "e8_top2_bf16 4 sequences --overlap on, every expert on both workers" "$G/e8_top2_bf16" 2 \
  "$WORK/replicas-all.json" "--expert-slots 8 --overlap on" "$four" "steps ran as two micro-batches"

# Quantized weights (--quantize): the workers hold their experts quantized, the coordinator its
# attention and lm_head, and the cluster's logits equal the single process's at the same format
# (the quantized kernels are batch invariant, so the workers' batches change nothing); with
# replicas; and from a quantized checkpoint (moe-quantize), whose logits equal quantizing at load.
for q in int8 int4 "experts=int4,attention=int8,lm_head=stored"; do
  QUANTIZE=$q logits_case "e8_top2_bf16 --quantize $q" "$G/e8_top2_bf16" 3
done
QUANTIZE=int4 logits_case "swa_gqa4 --quantize int4, hot experts replicated" "$G/swa_gqa4" 3 \
  "$WORK/replicas-hot.json" "--expert-slots 5"
"$BIN/moe-quantize" --model "$G/e8_top2_bf16" --out "$WORK/e8-int4" --quantize int4 >/dev/null 2>&1
cp "$G/e8_top2_bf16/golden.json" "$WORK/e8-int4/"
tokens=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$G/e8_top2_bf16/golden.json'))['prompts'][1])))")
"$BIN/moe-logits" --model "$G/e8_top2_bf16" --tokens "$tokens" --out "$WORK/at-load.npy" --quantize int4
if "$LAUNCH" --model "$WORK/e8-int4" --workers 2 -- --tokens "$tokens" --out "$WORK/from-file.npy" \
     >"$WORK/log.txt" 2>&1 && r=$(compare "$WORK/from-file.npy" "$WORK/at-load.npy" 1e-30); then
  pass "an INT4 checkpoint through the cluster == quantizing at load in one process ($r)"
else
  fail "an INT4 checkpoint through the cluster: ${r:-$(tail -5 "$WORK/log.txt")}"
fi
if grep -q "experts INT4" "$WORK/log.txt"; then
  pass "the start-up table says how each rank holds its weights: $(grep -m1 'experts INT4' "$WORK/log.txt")"
else
  fail "the start-up table does not show the workers' INT4 experts: $(head -8 "$WORK/log.txt")"
fi

# The trained default (deploy/models/pystd) through the cluster: with float32 products every
# greedy continuation is transformers' own, token for token (tests/golden/pystd/golden.json,
# made by scripts/make_goldens.py); with the default numerics it equals the single process.
P=$SRC/deploy/models/pystd
for i in 0 1 2; do
  # The x keeps a prompt's trailing newline, which $(...) would strip.
  text=$("$PY" -c "import json,sys; sys.stdout.write(json.load(open('$G/pystd/golden.json'))['prompt_texts'][$i] + 'x')")
  text=${text%x}
  want=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$G/pystd/golden.json'))['greedy'][$i]['tokens'])))")
  n=$(awk -F, '{print NF}' <<<"$want")
  got=$("$LAUNCH" --model "$P" --workers 2 --cpu-numerics f32 -- --prompt "$text" --max-tokens "$n" \
          --print-ids 2>"$WORK/log.txt" | tail -1)
  if [[ "$got" == "$want" ]]; then
    pass "pystd greedy $i through the cluster (W=2, f32) == transformers ($n tokens)"
  else
    fail "pystd greedy $i through the cluster: got [$got], transformers [$want]; $(tail -3 "$WORK/log.txt")"
  fi
  single=$("$BIN/moe-generate" --model "$P" --prompt "$text" --max-tokens "$n" --print-ids | tail -1)
  cluster=$("$LAUNCH" --model "$P" --workers 3 -- --prompt "$text" --max-tokens "$n" --print-ids \
              2>/dev/null | tail -1)
  if [[ -n $single && "$single" == "$cluster" ]]; then
    pass "pystd greedy $i through the cluster (W=3, default numerics) == single process"
  else
    fail "pystd greedy $i (default numerics): cluster [$cluster], single process [$single]"
  fi
done

# Generation: the same text as the single-process tool, greedy and seeded.
"$PY" "$SRC/scripts/make_model.py" --out "$WORK/gen" --vocab 32000 --hidden 64 --intermediate 96 \
  --layers 3 --heads 4 --kv-heads 2 --experts 8 --top-k 2 --max-pos 8192 --dtype bf16 --seed 5 \
  --tokenizer "$SRC/core/model/tokenizer/tokenizer.model" >/dev/null
for args in "--max-tokens 24" "--max-tokens 24 --temperature 0.9 --top-p 0.9 --top-k 40 --seed 3"; do
  single=$("$BIN/moe-generate" --model "$WORK/gen" --prompt "The quick brown fox" $args)
  cluster=$("$LAUNCH" --model "$WORK/gen" --workers 3 -- --prompt "The quick brown fox" $args 2>/dev/null \
            | grep -v -e '^moe-coordinator:' -e '^  ')
  if [[ -n $single && "$single" == "$cluster" ]]; then
    pass "generation through the cluster == single process ($args)"
  else
    fail "generation ($args): single '$single' vs cluster '$cluster'"
  fi
done
# ... and with replicas (greedy: every step's split differs from the last).
single=$("$BIN/moe-generate" --model "$WORK/gen" --prompt "The quick brown fox" --max-tokens 24)
cluster=$("$LAUNCH" --model "$WORK/gen" --workers 3 --placement "$WORK/replicas-hot.json" -- \
            --prompt "The quick brown fox" --max-tokens 24 2>/dev/null \
          | grep -v -e '^moe-coordinator:' -e '^  ')
if [[ -n $single && "$single" == "$cluster" ]]; then
  pass "generation through the cluster with replicas == single process (greedy)"
else
  fail "generation with replicas: single '$single' vs cluster '$cluster'"
fi

# expect_failure NAME FRAGMENT LAUNCH-ARGS...: non-zero exit, the fragment in the output.
expect_failure() {
  local name=$1 fragment=$2
  shift 2
  timeout 60 "$LAUNCH" "$@" >"$WORK/log.txt" 2>&1
  local rc=$?
  if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -q -- "$fragment" "$WORK/log.txt"; then
    pass "$name: exit $rc, $(grep -m1 -- "$fragment" "$WORK/log.txt")"
  else
    fail "$name: exit $rc: $(tail -5 "$WORK/log.txt")"
  fi
}
echo '{"experts": [1, 1, 2, 2, 3, 3, 4, 9]}' >"$WORK/bad-rank.json"
echo '{"experts": [1, 1, 2, 2, 3, 3, 4, null]}' >"$WORK/unowned.json"
echo '{"experts": [1, 1, 1, 1, 1, 1, 1, 1]}' >"$WORK/idle-worker.json"
M=$G/e8_top2_bf16
expect_failure "placement rank out of range" "assigned to rank 9, outside the worker ranks 1..4" \
  --model "$M" --workers 4 --placement "$WORK/bad-rank.json" -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "placement expert unowned" "layer 0 expert 7 is unowned" \
  --model "$M" --workers 4 --placement "$WORK/unowned.json" -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "placement leaves a worker idle" "worker rank 2 hosts no expert" \
  --model "$M" --workers 2 --placement "$WORK/idle-worker.json" -- --tokens 1,2 --out "$WORK/x.npy"
echo '{"experts": [[1, 1], 1, 2, 2, 3, 3, 4, 4]}' >"$WORK/twice.json"
echo '{"experts": [1, [], 2, 2, 3, 3, 4, 4]}' >"$WORK/empty-list.json"
expect_failure "placement over the slot budget" \
  "worker rank 1 hosts 8 expert slots of layer 0, over the budget of 7 per layer" \
  --model "$M" --workers 2 --placement "$WORK/replicas-all.json" -- --expert-slots 7 --tokens 1,2 \
  --out "$WORK/x.npy"
expect_failure "the contiguous default over the slot budget" "worker rank 1 hosts 4 expert slots of layer 0" \
  --model "$M" --workers 2 -- --expert-slots 3 --tokens 1,2 --out "$WORK/x.npy"
expect_failure "a file's budget the flag disagrees with" '"expert_slots": 3 disagrees with --expert-slots 4' \
  --model "$G/f16_tied" --workers 4 --placement "$WORK/replicas-layers.json" -- --expert-slots 4 \
  --tokens 1,2 --out "$WORK/x.npy"
expect_failure "a replica listed twice on one rank" "layer 0 expert 0 lists worker rank 1 twice" \
  --model "$M" --workers 4 --placement "$WORK/twice.json" -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "an empty list of replicas" "layer 0 expert 1 has an empty list of worker ranks" \
  --model "$M" --workers 4 --placement "$WORK/empty-list.json" -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "a negative slot budget" "--expert-slots must be >= 0" \
  --model "$M" --workers 2 -- --expert-slots -1 --tokens 1,2 --out "$WORK/x.npy"
expect_failure "more workers than experts" "9 workers for 8 experts" \
  --model "$M" --workers 9 -- --tokens 1,2 --out "$WORK/x.npy"
"$PY" "$SRC/tests/coordinator/tools/corrupt_checkpoint.py" "$WORK/gen" "$WORK/broken-expert" wrong-shape
expect_failure "a worker's expert is broken" "worker rank 1: .*experts.1.w2.weight" \
  --model "$WORK/broken-expert" --workers 4 -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "bad token through the cluster" "token id 99999 is outside the vocabulary" \
  --model "$M" --workers 2 -- --tokens 1,99999 --out "$WORK/x.npy"
expect_failure "NCCL asked for on CPU ranks" "--exchange nccl: rank 0 does not compute on a GPU" \
  --model "$M" --workers 2 -- --exchange nccl --tokens 1,2 --out "$WORK/x.npy"
expect_failure "a worker timeout of 0" "--worker-timeout-s must be > 0" \
  --model "$M" --workers 2 -- --worker-timeout-s 0 --tokens 1,2 --out "$WORK/x.npy"
expect_failure "an unknown exchange" "--exchange must be auto, mpi or nccl, got 'pigeon'" \
  --model "$M" --workers 2 -- --exchange pigeon --tokens 1,2 --out "$WORK/x.npy"
expect_failure "ranks that multiply differently" "worker rank 1 runs --cpu-numerics fast, the coordinator f32" \
  --model "$M" --workers 2 -- --cpu-numerics f32 --tokens 1,2 --out "$WORK/x.npy"
expect_failure "ranks holding the experts differently" "worker rank 1 holds the experts as BF16, the coordinator as INT8" \
  --model "$M" --workers 2 -- --quantize int8 --tokens 1,2 --out "$WORK/x.npy"
expect_failure "an unknown --quantize" "unknown weight format 'int3'" \
  --model "$M" --workers 2 --quantize int3 -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "an INT4 checkpoint asked to be INT8" "is stored as INT4 and cannot be held as int8" \
  --model "$WORK/e8-int4" --workers 2 --quantize int8 -- --tokens 1,2 --out "$WORK/x.npy"
expect_failure "an unknown --cpu-numerics" "--cpu-numerics must be fast or f32, got 'bf8'" \
  --model "$M" --workers 2 --cpu-numerics bf8 -- --tokens 1,2 --out "$WORK/x.npy"

# Float32 products through the cluster equal them in one process (the default, rounded, is
# compared by logits_case above).
tokens=$("$PY" -c "import json; print(','.join(map(str, json.load(open('$M/golden.json'))['prompts'][1])))")
"$BIN/moe-logits" --model "$M" --tokens "$tokens" --out "$WORK/single-f32.npy" --cpu-numerics f32
"$BIN/moe-logits" --model "$M" --tokens "$tokens" --out "$WORK/single-fast.npy"
if "$LAUNCH" --model "$M" --workers 2 --cpu-numerics f32 -- --tokens "$tokens" --out "$WORK/cluster-f32.npy" \
     >"$WORK/log.txt" 2>&1 && r=$(compare "$WORK/cluster-f32.npy" "$WORK/single-f32.npy"); then
  pass "--cpu-numerics f32: cluster == single process ($r)"
else
  fail "--cpu-numerics f32 through the cluster: ${r:-$(tail -5 "$WORK/log.txt")}"
fi
# ... and the two numerics really differ on BF16 weights (where the CPU has BF16 dot products).
if grep -q avx512_bf16 /proc/cpuinfo; then
  if r=$(compare "$WORK/single-fast.npy" "$WORK/single-f32.npy" 1e-6); then
    fail "--cpu-numerics fast and f32 gave the same logits on BF16 weights ($r)"
  else
    pass "--cpu-numerics fast differs from f32 on BF16 weights ($r), as rounding activations must"
  fi
fi

# Running and not a zombie (an exited rank stays a zombie until mpirun reaps it).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null)
  [[ -n $state && $state != Z* ]]
}

# run_and_disrupt NAME BOUND ACTION EXPECT: a long generation, disrupted once running; the whole job must end
# (EXPECT: a line of its stderr, or its exit code)
# within BOUND seconds of the disruption with a non-zero exit, leaving no rank behind.
# The model is one of its own with steps of ~2 ms: $WORK/gen makes its 6000 tokens in 0.4 s on a
# fast host, over before any disruption.
"$PY" "$SRC/scripts/make_model.py" --out "$WORK/slow" --vocab 32000 --hidden 512 --intermediate 1024 \
  --layers 4 --heads 8 --kv-heads 2 --experts 4 --top-k 2 --max-pos 8192 --dtype bf16 --seed 5 \
  --tokenizer "$SRC/core/model/tokenizer/tokenizer.model" >/dev/null
run_and_disrupt() {
  local name=$1 bound=$2 action=$3 expect=$4
  "$LAUNCH" --model "$WORK/slow" --workers 2 -- --worker-timeout-s 2 --prompt "Once upon a time" \
    --max-tokens 6000 >"$WORK/out.txt" 2>"$WORK/log.txt" &
  local launcher=$!
  local worker="" coordinator="" tries=0
  # Wait until every rank has started (MPI_Init done, placement printed; a slow host may take
  # seconds), then let the generation get going.
  while ! grep -a -q "ranks started" "$WORK/out.txt" 2>/dev/null && [[ $tries -lt 600 ]]; do
    sleep 0.1
    tries=$((tries + 1))
  done
  sleep 1
  # Anchored: mpirun's own command line names both programs too.
  worker=$(pgrep -f "^[^ ]*moe-worker --model $WORK/slow" | head -1)
  coordinator=$(pgrep -f "^[^ ]*moe-coordinator --model $WORK/slow" | head -1)
  if [[ -z $worker || -z $coordinator ]]; then
    fail "$name: the cluster was not running after $((tries / 10 + 1)) s: $(tail -3 "$WORK/log.txt")"
    kill -KILL $launcher 2>/dev/null
    wait $launcher
    return
  fi
  local t0=$SECONDS
  case $action in
    kill-worker) kill -KILL "$worker" ;;
    stop-worker) kill -STOP "$worker" ;;
    term-coordinator) kill -TERM "$coordinator" ;;
    term-mpirun) kill -TERM "$launcher" ;;
  esac
  # The bound applies to the coordinator: it must give up within BOUND seconds. Tearing down the
  # rest of the job is mpirun's, which may take longer where host name lookups are slow.
  local waited=0
  while alive "$coordinator" && [[ $waited -lt $((bound * 10)) ]]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  local elapsed=$((SECONDS - t0))
  local coordinator_alive=0
  alive "$coordinator" && coordinator_alive=1
  # A stopped process can only be SIGKILLed; mpirun does not always do it, so play the operator.
  kill -CONT "$worker" 2>/dev/null
  waited=0
  while kill -0 $launcher 2>/dev/null && [[ $waited -lt 600 ]]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 $launcher 2>/dev/null || [[ $coordinator_alive -eq 1 ]]; then
    fail "$name: the coordinator was still running after ${bound} s, or the job after 60 s more"
    kill -CONT "$worker" 2>/dev/null
    kill -KILL $launcher 2>/dev/null
    pkill -KILL -f "model $WORK/slow" 2>/dev/null
    wait $launcher 2>/dev/null
    return
  fi
  wait $launcher
  local rc=$?
  kill -CONT "$worker" 2>/dev/null
  sleep 0.5
  if pgrep -f "model $WORK/slow" >/dev/null; then
    fail "$name: ranks left behind: $(pgrep -af "model $WORK/slow")"
    pkill -KILL -f "model $WORK/slow"
  elif [[ $rc -ne 0 ]] && { [[ $rc == "$expect" ]] || grep -a -q -- "$expect" "$WORK/log.txt"; }; then
    pass "$name: the coordinator ended ~${elapsed} s after it, the job with exit $rc: $(grep -a -m1 -- "$expect" "$WORK/log.txt" | cut -c1-160)"
  else
    fail "$name: exit $rc after ${elapsed} s: $(tail -4 "$WORK/log.txt")"
  fi
}
run_and_disrupt "killed worker" 15 kill-worker "exited on signal 9\|did not answer"
run_and_disrupt "hung worker" 15 stop-worker "did not answer within 2 s"
# The coordinator's own exit code 143 (128 + SIGTERM) proves its handler ran; mpirun may drop the
# last lines of a rank's stderr when the job ends at once.
run_and_disrupt "SIGTERM to the coordinator" 15 term-coordinator 143
run_and_disrupt "SIGTERM to mpirun" 15 term-mpirun "."

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
