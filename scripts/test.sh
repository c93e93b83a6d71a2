#!/usr/bin/env bash
# Runs every test: installs packages, builds, runs ctest; then builds the tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ and runs them there too
# (MOE_SKIP_SANITIZERS=1 skips that second pass); between the two, fuzzes the parsers for a bounded
# time (scripts/fuzz.sh).
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest shows a skipped test or case only as skipped: print why, counted (the GPU tests on a
# machine without a GPU).
skip_reasons() {
  local log=$1/Testing/Temporary/LastTest.log
  if grep -q -e '^SKIP: ' -e '^no CUDA device: ' "$log" 2>/dev/null; then
    echo "Skipped in $1, with the reasons (count, reason):"
    grep -h -o -e '^SKIP: .*' -e '^no CUDA device: .*' "$log" | sort | uniq -c
  fi
}
# Each phase's wall time, printed as it ends and summed up at the end (CI's budget is watched).
PHASES=()
phase() {  # phase NAME COMMAND...
  local name=$1 start=$SECONDS
  shift
  "$@"
  PHASES+=("$(printf '%-28s %5d s' "$name" $((SECONDS - start)))")
  echo "test.sh: $name took $((SECONDS - start)) s"
}
trap 'echo "test.sh: phases (wall time):"; printf "  %s\n" "${PHASES[@]}"; echo "  total $SECONDS s"' EXIT
phase "install packages" scripts/install-deps.sh
phase "install Python packages" scripts/install-python-deps.sh
phase "build" scripts/build.sh
phase "ctest" ctest --test-dir build --output-on-failure --parallel 2
skip_reasons build
# The parsers of untrusted bytes under libFuzzer, a bounded time each (scripts/fuzz.sh; longer by
# hand). MOE_FUZZ_SECONDS=0 skips it.
if [[ "${MOE_FUZZ_SECONDS:-12}" != 0 ]]; then
  phase "fuzz (build and run)" scripts/fuzz.sh "${MOE_FUZZ_SECONDS:-12}"
fi
if [[ "${MOE_SKIP_SANITIZERS:-0}" != 1 ]]; then
  # CUDA code is not instrumented by the host sanitizers; leave it to the main build. Line tables
  # only (-g1): all the sanitizers' reports need, and a third less compile time than full -g on
  # the gRPC-heavy files (this build is CI's longest phase).
  phase "build (sanitizers)" env BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo scripts/build.sh \
    -DMOE_SANITIZE=ON -DMOE_CUDA=OFF '-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG'
  # The client_tools tests (lm-eval, aiperf, Hugging Face's tokenizers) hold third-party clients to
  # the server's answers: the main pass runs them; the server under the sanitizers meets the same
  # request shapes in openai_test, logprobs_test and hostile_http_test. The wiring tests (soak,
  # several hosts, Slurm, the client package) run no C++ path the others do not (tests/CMakeLists.txt).
  phase "ctest (sanitizers)" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --parallel 2 --label-exclude 'client_tools|wiring'
  skip_reasons build-asan
fi
