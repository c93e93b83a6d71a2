// Generate: one sequence from prompt to stop (EOS or max new tokens) through a ModelRunner.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/model_runner.h"
#include "coordinator/sampler.h"

namespace moe {

struct GenerationRequest {
  std::vector<int32_t> prompt;   // token ids, BOS included when wanted
  SamplingParams sampling;
  int max_new_tokens = 64;       // >= 1
  int prefill_chunk = 512;       // prompt tokens per forward step; bounds one step's work
  uint64_t sequence_id = 1;      // names the sequence to routing observers (traces, telemetry)
};

struct GenerationResult {
  std::vector<int32_t> tokens;   // generated ids (EOS included when it ended the sequence)
  std::string finish_reason;     // "eos" or "length"
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Checks a request against the model before any work: non-empty prompt, ids in the vocabulary,
// prompt + max_new_tokens within max_position_embeddings, sampling parameters in range.
absl::Status ValidateRequest(const MixtralConfig& config, const GenerationRequest& request);

// Prefills the prompt in chunks of request.prefill_chunk tokens, then decodes token by token;
// on_token sees each new id.
absl::StatusOr<GenerationResult> Generate(ModelRunner* runner, const GenerationRequest& request,
                                          const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace moe
