#!/usr/bin/env bash
# The main job on the embedded default: installs packages, builds, generates a small random
# Mixtral checkpoint (real tokenizer, vocabulary 32000) and generates text from a prompt.
# Random weights make random text: the point is the whole path, from checkpoint to streamed tokens.
# usage: scripts/demo.sh [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-"The capital of France is"}
scripts/install-deps.sh
scripts/build.sh
MODEL=models/demo
if [[ ! -f $MODEL/model.safetensors ]]; then
  /usr/bin/python3 scripts/make_model.py --out $MODEL --vocab 32000 --hidden 256 --intermediate 512 \
    --layers 4 --heads 8 --kv-heads 2 --experts 8 --top-k 2 --sliding-window 256 --dtype bf16 \
    --seed 1 --tokenizer core/tokenizer/tokenizer.model
fi
echo "--- moe-generate --model $MODEL --prompt \"$PROMPT\""
build/bin/moe-generate --model $MODEL --prompt "$PROMPT" --max-new-tokens 32 --temperature 0.8 \
  --top-p 0.95 --seed 1 --stats
