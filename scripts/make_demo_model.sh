#!/usr/bin/env bash
# The embedded default model: a small random Mixtral (4 layers, 256 wide, 8 experts top-2) with
# the real 32000-piece tokenizer, in models/demo. Random weights give random text. The router is
# skewed towards low-numbered experts (--router-skew 2, a Zipf-like preference) so the load view
# has imbalance to show. Remakes the model when this recipe changes.
# usage: scripts/make_demo_model.sh [DIR]   (default models/demo; tests make their own copy)
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/demo}
ARGS=(--out "$OUT" --vocab 32000 --hidden 256 --intermediate 512 --layers 4 --heads 8 --kv-heads 2
  --experts 8 --top-k 2 --sliding-window 256 --dtype bf16 --seed 1 --router-skew 2
  --tokenizer core/model/tokenizer/tokenizer.model)
RECIPE="${ARGS[*]}"
if [[ -f $OUT/model.safetensors && "$(cat "$OUT/RECIPE" 2>/dev/null)" == "$RECIPE" ]]; then
  exit 0
fi
/usr/bin/python3 scripts/make_model.py "${ARGS[@]}"
echo "$RECIPE" > "$OUT/RECIPE"
