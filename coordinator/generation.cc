#include "coordinator/generation.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

absl::Status ValidateRequest(const MixtralConfig& c, const GenerationRequest& r) {
  if (r.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t id : r.prompt) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (r.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", r.max_new_tokens));
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", r.prompt.size(), " tokens) + max_new_tokens (", r.max_new_tokens,
        ") exceeds the model's context of ", c.max_position_embeddings, " positions"));
  }
  return r.sampling.Validate();
}

absl::StatusOr<GenerationResult> Generate(ModelRunner* runner, const GenerationRequest& request,
                                          const std::function<void(int32_t)>& on_token) {
  const MixtralConfig& c = runner->config();
  MOE_RETURN_IF_ERROR(ValidateRequest(c, request));
  GenerationResult result;
  struct EndSequence {  // on every return path: observers may drop this sequence's state
    ModelRunner* runner;
    uint64_t id;
    ~EndSequence() { runner->EndSequence(id); }
  } end{runner, request.sequence_id};
  KvCache cache = runner->NewCache();
  Sampler sampler(request.sampling);
  std::vector<int32_t> sampled;
  auto clock = std::chrono::steady_clock::now();
  // All but the last prefill chunk only fill the cache; the last one gives the first logits.
  absl::Span<const int32_t> prompt(request.prompt);
  const size_t chunk_size = static_cast<size_t>(std::max(1, request.prefill_chunk));
  while (prompt.size() > chunk_size) {
    const SequenceChunk chunk{&cache, prompt.subspan(0, chunk_size), /*all_logits=*/false,
                              request.sequence_id};
    MOE_RETURN_IF_ERROR(runner->Forward({&chunk, 1}, /*logits=*/nullptr));
    prompt.remove_prefix(chunk_size);
  }
  std::vector<int32_t> next(prompt.begin(), prompt.end());
  for (int step = 0; step < request.max_new_tokens; ++step) {
    const SequenceChunk chunk{&cache, next, /*all_logits=*/false, request.sequence_id};
    MOE_RETURN_IF_ERROR(runner->Forward({&chunk, 1}, /*logits=*/nullptr));
    Sampler* samplers[] = {&sampler};
    MOE_RETURN_IF_ERROR(runner->SampleNext(samplers, &sampled));
    const int32_t id = sampled[0];
    const auto now = std::chrono::steady_clock::now();
    (step == 0 ? result.prefill_seconds : result.decode_seconds) +=
        std::chrono::duration<double>(now - clock).count();
    clock = now;
    result.tokens.push_back(id);
    if (on_token) on_token(id);
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) != c.eos_token_ids.end()) {
      result.finish_reason = "eos";
      return result;
    }
    next.assign(1, id);
  }
  result.finish_reason = "length";
  return result;
}

}  // namespace moe
