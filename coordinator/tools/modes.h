// The one-shot modes shared by the single-process tools and the cluster's coordinator: generate
// text, dump logits, benchmark. Each reads its own flags (defined in its .cc) and drives any
// ModelRunner, local or distributed, so both paths answer the same command lines identically.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/telemetry/routing_trace.h"
#include "core/base/op_timer.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/model/model_weights.h"

namespace moe::cli {

// --routing-trace FILE: records every token's routing through `runner` into FILE, and the
// sequences and steps into FILE.events.jsonl (docs/routing-trace-format.md). Null when the flag is
// empty; keep the writer alive while the runner runs (it flushes and closes when destroyed).
// placement and exchange_observers (the cluster exchange's, for the steps' per-worker times): null
// in a single process.
absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> OpenRoutingTrace(
    ModelRunner* runner, const ExpertPlacement* placement,
    ExchangeObservers* exchange_observers = nullptr);

// --prompt, --max-tokens, --temperature, --top-p, --top-k, --seed, --tokenizer, --stats.
// Streams text to stdout.
absl::Status RunGenerateMode(ModelRunner* runner, const std::string& model_dir);
bool GenerateModeRequested();  // --prompt given

// --tokens, --out, --incremental: float32 logits [n_tokens, vocab] as .npy.
absl::Status RunLogitsMode(ModelRunner* runner);
bool LogitsModeRequested();  // --tokens or --out given

// --perplexity-file, --ctx, --chunks, --chunk-batch: the mean next-token loss over a text file,
// by llama-perplexity's protocol (perplexity_mode.cc says how), printed as it goes.
absl::Status RunPerplexityMode(ModelRunner* runner, const std::string& model_dir);
bool PerplexityModeRequested();  // --perplexity-file given

// --batch, --bench-prompt-tokens, --bench-decode-tokens, --bandwidth-mib. exchange: the cluster
// exchange's running sums (null in a single process), reset and printed per phase.
absl::Status RunBenchMode(ModelRunner* runner, const ModelWeights& weights, OpTimes* times,
                          ExchangeStats* exchange = nullptr);

}  // namespace moe::cli
