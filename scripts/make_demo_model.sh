#!/usr/bin/env bash
# The embedded default model: a small random Mixtral (4 layers, 256 wide, 8 experts top-2) with
# the real 32000-piece tokenizer, in models/demo. Random weights give random text.
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 scripts/make_model.py --out models/demo --vocab 32000 --hidden 256 --intermediate 512 \
  --layers 4 --heads 8 --kv-heads 2 --experts 8 --top-k 2 --sliding-window 256 --dtype bf16 \
  --seed 1 --tokenizer core/tokenizer/tokenizer.model
