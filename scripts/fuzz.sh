#!/usr/bin/env bash
# Fuzzes the parsers of untrusted bytes with libFuzzer (Debian's clang and libclang-rt-14-dev),
# under AddressSanitizer + UndefinedBehaviorSanitizer: safetensors headers, config.json, the
# tokenizer model, placement files, the workers' step messages, routing traces.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 15 (CI runs 12 each: about 75 s of fuzzing)
#   TARGET              safetensors config tokenizer_model placement step_messages routing_trace
#                       (default: all)
# Builds build-fuzz/ with clang (its own build directory: nothing else is affected), then runs each
# target for the given time, starting from the committed seeds (tests/fuzz/corpus/TARGET) and what
# earlier runs here found (build-fuzz/corpus/TARGET). On a crash it stops with a non-zero exit and
# leaves the input as build-fuzz/crashes/TARGET-crash-*, replayable with
# build-fuzz/bin/fuzz_TARGET FILE (or build/bin/fuzz_TARGET FILE, without libFuzzer). Add such an
# input to tests/fuzz/corpus/TARGET/ once the bug is fixed: ctest's fuzz_corpus_test replays it.
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-15}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(safetensors config tokenizer_model placement step_messages routing_trace)
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || [[ $SECONDS_PER_TARGET -lt 1 ]]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got '$SECONDS_PER_TARGET'" >&2
  exit 2
fi
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is missing: run scripts/install-deps.sh" >&2; exit 2; }

BUILD=build-fuzz
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  GENERATOR=()
  command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
  # -Werror off: clang warns where gcc, which the project's warnings are tuned for, does not.
  CC=clang CXX=clang++ cmake -S . -B $BUILD "${GENERATOR[@]}" -DMOE_FUZZ=ON -DBUILD_TESTING=OFF \
    -DMOE_CUDA=OFF -DMOE_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build $BUILD --parallel "$(nproc)" --target "${TARGETS[@]/#/fuzz_}"

mkdir -p $BUILD/crashes
for t in "${TARGETS[@]}"; do
  mkdir -p $BUILD/corpus/$t
  echo "fuzz.sh: fuzz_$t for ${SECONDS_PER_TARGET} s"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that needs 2 GB is a bug too.
  # The first corpus directory receives new inputs; the committed seeds are only read.
  log=$BUILD/fuzz_$t.log
  status=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    $BUILD/bin/fuzz_$t -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix=$BUILD/crashes/$t- -print_final_stats=1 \
      $BUILD/corpus/$t tests/fuzz/corpus/$t >"$log" 2>&1 || status=$?
  grep -E '^(INFO: seed corpus|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
  if [[ $status -ne 0 ]]; then
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20 >&2 || true
    echo "fuzz.sh: fuzz_$t FAILED (exit $status); the input is in $BUILD/crashes/" >&2
    exit 1
  fi
done
echo "fuzz.sh: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET} s each, no crash"
