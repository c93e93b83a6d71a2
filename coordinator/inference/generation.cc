#include "coordinator/inference/generation.h"

#include <algorithm>

#include "core/base/status_macros.h"

namespace moe {

absl::StatusOr<GenerationResult> Generate(ModelRunner* runner, const Tokenizer* tokenizer,
                                          Request request, int prefill_chunk,
                                          const std::function<void(const StreamEvent&)>& on_event) {
  SchedulerOptions options;
  options.max_batch_tokens = std::max(1, prefill_chunk);
  options.max_running = 1;
  options.max_waiting = 1;
  options.limits.max_tokens =
      std::max(1, request.max_tokens);  // the model's context still bounds it
  // Exactly this request's KV cache: the one-shot tools have no other budget to respect.
  const int64_t positions = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  options.kv_budget_bytes =
      std::max<int64_t>(1, positions * Scheduler::KvBytesPerPosition(runner->config()));
  Scheduler scheduler(runner, tokenizer, options);
  MOE_ASSIGN_OR_RETURN(std::shared_ptr<RequestHandle> handle, scheduler.Submit(std::move(request)));
  GenerationResult result;
  for (;;) {
    // The only request: there is work until it has finished, and a failed step ends it.
    if (absl::Status step = scheduler.Step(); !step.ok()) {
      scheduler.FailAll(step);
      return step;
    }
    for (StreamEvent& e : handle->Wait(absl::ZeroDuration())) {
      if (!e.error.ok()) return e.error;
      if (on_event) on_event(e);
      result.tokens.insert(result.tokens.end(), e.token_ids.begin(), e.token_ids.end());
      result.text += e.text;
      if (e.finish != FinishReason::kNone) {
        result.finish = e.finish;
        result.time_to_first_token_ms = e.time_to_first_token_ms;
        result.total_ms = e.total_ms;
        return result;
      }
    }
  }
}

}  // namespace moe
