// The one-shot modes shared by the single-process tools and the cluster's coordinator: generate
// text, dump logits, benchmark. Each reads its own flags (defined in its .cc) and drives any
// ModelRunner, local or distributed, so both paths answer the same command lines identically.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "coordinator/model_runner.h"
#include "core/model_weights.h"
#include "core/op_timer.h"

namespace moe::cli {

// --prompt, --max-new-tokens, --temperature, --top-p, --top-k, --seed, --tokenizer, --stats.
// Streams text to stdout.
absl::Status RunGenerateMode(ModelRunner* runner, const std::string& model_dir);
bool GenerateModeRequested();  // --prompt given

// --tokens, --out, --incremental: float32 logits [n_tokens, vocab] as .npy.
absl::Status RunLogitsMode(ModelRunner* runner);
bool LogitsModeRequested();  // --tokens or --out given

// Figures only the caller knows (the cluster's exchange statistics), collected per phase.
struct BenchHooks {
  std::function<void()> reset;                      // before each timed phase
  std::function<void(const char* phase)> report;   // after it: "prefill" or "decode"
};

// --bench-prompt-tokens, --bench-decode-tokens, --bandwidth-mib.
absl::Status RunBenchMode(ModelRunner* runner, const ModelWeights& weights, OpTimes* times,
                          const BenchHooks& hooks = {});

}  // namespace moe::cli
