#!/usr/bin/env bash
# Speed beside llama.cpp at each precision, in one sitting, alternating runs: ours, then llama.cpp's,
# per format and per round, with the ratio taken per round (these machines' speed drifts).
#
# usage: scripts/bench_vs_llama.sh LLAMA_BIN_DIR GGUF_PREFIX [ROUNDS] [FORMATS]
#   LLAMA_BIN_DIR  a llama.cpp build's bin/ (llama-bench, llama-batched-bench), built by you
#                  outside this tree (README, "Performance", says how)
#   GGUF_PREFIX    the same weights as GGUF: PREFIX-bf16.gguf, PREFIX-Q8_0.gguf, PREFIX-Q4_K_M.gguf
#   ROUNDS         default 2
#   FORMATS        default "bf16 int8 int4"; each pairs a model directory of ours with a GGUF:
#                    bf16     models/slice          (as stored)  PREFIX-bf16.gguf
#                    int8     models/slice-int8     (moe-quantize --quantize int8)  PREFIX-Q8_0.gguf
#                    int4     models/slice-int4     (moe-quantize --quantize int4)  PREFIX-Q4_K_M.gguf
#                    int4all  models/slice-int4all  (moe-quantize --quantize
#                             experts=int4,attention=int4,lm_head=int8)             PREFIX-Q4_K_M.gguf
# Environment: MODEL (default models/slice), THREADS (default 2), BUILD_DIR (default build).
# Figures, per format and round: prefill 512 and batch-1 decode (moe-bench beside llama-bench -p 512
# -n 32), and 16 and 64 sequences decoding together (moe-bench --batch 16,64 beside
# llama-batched-bench's S_TG), with our share of the bandwidth measured in the same run, and our
# prefill's share of the product peak.
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BUILD_DIR:-$ROOT/build}/bin
LLAMA=${1:?usage: bench_vs_llama.sh LLAMA_BIN_DIR GGUF_PREFIX [ROUNDS] [FORMATS]}
PREFIX=${2:?usage: bench_vs_llama.sh LLAMA_BIN_DIR GGUF_PREFIX [ROUNDS] [FORMATS]}
ROUNDS=${3:-2}
FORMATS=${4:-bf16 int8 int4}
MODEL=${MODEL:-$ROOT/models/slice}
T=${THREADS:-2}
for tool in "$LLAMA/llama-bench" "$LLAMA/llama-batched-bench" "$BIN/moe-bench"; do
  [[ -x $tool ]] || { echo "bench_vs_llama.sh: $tool is missing" >&2; exit 2; }
done
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

ours_dir() { case $1 in bf16) echo "$MODEL" ;; *) echo "$MODEL-$1" ;; esac; }
gguf() { case $1 in bf16) echo "$PREFIX-bf16.gguf" ;; int8) echo "$PREFIX-Q8_0.gguf" ;; int4*) echo "$PREFIX-Q4_K_M.gguf" ;; esac; }
# field LOG PATTERN: the number before " tokens/s" on the first line matching PATTERN.
field() { grep -m1 -- "$2" "$1" | sed -n 's/.* = \([0-9.]*\) tokens\/s.*/\1/p'; }
bw_share() { grep -A1 -m1 -- "$2 decode:" "$1" | sed -n 's/.*, \([0-9]*\)% of the bandwidth.*/\1/p'; }
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2" 2>/dev/null || echo "?"; }

for f in $FORMATS; do
  [[ -d $(ours_dir "$f") ]] || { echo "bench_vs_llama.sh: $(ours_dir "$f") is missing (moe-quantize makes it)" >&2; exit 2; }
  [[ -f $(gguf "$f") ]] || { echo "bench_vs_llama.sh: $(gguf "$f") is missing" >&2; exit 2; }
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; threads $T; $(date -u +%F)"
printf '%-5s %-7s %-26s %10s %10s %6s %s\n' round fmt figure ours llama ratio "ours' bandwidth share"
for round in $(seq 1 "$ROUNDS"); do
  for f in $FORMATS; do
    m=$(ours_dir "$f") g=$(gguf "$f")
    "$BIN/moe-bench" --model "$m" --threads "$T" --batch 1 --bench-prompt-tokens 512 --bench-decode-tokens 32 \
      >"$OUT/ours1.txt" 2>&1
    "$LLAMA/llama-bench" -m "$g" -t "$T" -p 512 -n 32 -r 1 -o csv >"$OUT/llama1.csv" 2>/dev/null
    "$BIN/moe-bench" --model "$m" --threads "$T" --batch 16,64 --bench-prompt-tokens 32 --bench-decode-tokens 32 \
      >"$OUT/oursb.txt" 2>&1
    "$LLAMA/llama-batched-bench" -m "$g" -t "$T" -c 4608 -b 2048 -ub 512 -npp 32 -ntg 32 -npl 16,64 \
      >"$OUT/llamab.txt" 2>/dev/null
    # llama-bench's CSV: n_prompt, n_gen and avg_ts columns by name.
    read -r pp tg < <(python3 - "$OUT/llama1.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] != "0")
tg = next(r["avg_ts"] for r in rows if r["n_gen"] != "0")
print(pp, tg)
PY
)
    # llama-batched-bench's table: | PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG | T | S |
    tg16=$(awk -F'|' '$4+0 == 16 {gsub(/ /, "", $9); print $9}' "$OUT/llamab.txt")
    tg64=$(awk -F'|' '$4+0 == 64 {gsub(/ /, "", $9); print $9}' "$OUT/llamab.txt")
    o_pp=$(field "$OUT/ours1.txt" "batch 1 prefill:") o_tg=$(field "$OUT/ours1.txt" "batch 1 decode:")
    o16=$(field "$OUT/oursb.txt" "batch 16 decode:") o64=$(field "$OUT/oursb.txt" "batch 64 decode:")
    printf '%-5s %-7s %-26s %10s %10s %6s\n' "$round" "$f" "prefill 512 (tokens/s)" "$o_pp" "$pp" "$(ratio "$o_pp" "$pp")"
    printf '%-5s %-7s %-26s %10s %10s %6s %s%%\n' "$round" "$f" "decode, batch 1" "$o_tg" "$tg" "$(ratio "$o_tg" "$tg")" \
      "$(bw_share "$OUT/ours1.txt" "batch 1")"
    printf '%-5s %-7s %-26s %10s %10s %6s %s%%\n' "$round" "$f" "16 decoding together (TG)" "$o16" "$tg16" "$(ratio "$o16" "$tg16")" \
      "$(bw_share "$OUT/oursb.txt" "batch 16")"
    printf '%-5s %-7s %-26s %10s %10s %6s %s%%\n' "$round" "$f" "64 decoding together (TG)" "$o64" "$tg64" "$(ratio "$o64" "$tg64")" \
      "$(bw_share "$OUT/oursb.txt" "batch 64")"
    grep -m1 "measured with" "$OUT/ours1.txt" | sed 's/^/      /'
    grep -m1 "batch 1 prefill:" "$OUT/ours1.txt" | sed 's/^/      ours: /'
  done
done
