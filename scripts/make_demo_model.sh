#!/usr/bin/env bash
# The embedded default model: a small random Mixtral (4 layers, 256 wide, 8 experts top-2) with
# the real 32000-piece tokenizer, in models/demo. Random weights give random text. The router is
# skewed towards low-numbered experts (--router-skew 2, a Zipf-like preference) so the load view
# has imbalance to show. Remakes the model when this recipe changes.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=(--out models/demo --vocab 32000 --hidden 256 --intermediate 512 --layers 4 --heads 8 --kv-heads 2
  --experts 8 --top-k 2 --sliding-window 256 --dtype bf16 --seed 1 --router-skew 2
  --tokenizer core/tokenizer/tokenizer.model)
RECIPE="${ARGS[*]}"
if [[ -f models/demo/model.safetensors && "$(cat models/demo/RECIPE 2>/dev/null)" == "$RECIPE" ]]; then
  exit 0
fi
/usr/bin/python3 scripts/make_model.py "${ARGS[@]}"
echo "$RECIPE" > models/demo/RECIPE
