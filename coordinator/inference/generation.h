// Generate: one request from prompt to finish on the calling thread, through a Scheduler of its
// own: the loop the server runs, so one-shot generation (moe-generate, the coordinator's --prompt
// mode) and serving turn steps into tokens the same way.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/inference/request.h"
#include "coordinator/inference/scheduler.h"
#include "core/model/tokenizer.h"

namespace moe {

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (EOS included when it ended the sequence)
  std::string text;             // their text, cut before a stop string
  FinishReason finish = FinishReason::kNone;
  double time_to_first_token_ms = 0;  // prefill and the first token
  double total_ms = 0;
};

// prefill_chunk: prompt tokens per forward step (bounds one step's work, e.g. under a worker
// timeout). on_event sees each event as it is produced (text streams from there). The request is
// validated by Scheduler::Submit (Request::Validate); callers may validate first with their own
// field names.
absl::StatusOr<GenerationResult> Generate(
    ModelRunner* runner, const Tokenizer* tokenizer, Request request, int prefill_chunk = 512,
    const std::function<void(const StreamEvent&)>& on_event = nullptr);

}  // namespace moe
