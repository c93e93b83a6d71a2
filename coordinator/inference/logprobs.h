// Log-probabilities as the APIs report them: of the logits as computed (float32, before penalties,
// temperature, top-k and top-p: vLLM's raw_logprobs), log_softmax summed in double.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace moe {

// The largest number of alternatives a request may ask for per position (vLLM's default).
inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0;                           // NaN: none (the first token of an echoed prompt)
  std::vector<std::pair<int32_t, float>> top;  // the most likely ids, falling; ties to the lower id
};

// The log-probability of `id` under one row of logits, and the row's `top_n` most likely ids.
// Non-finite logits: NaN never counts; a row without a finite maximum gives NaN.
TokenLogprob RowLogprob(const float* logits, int64_t vocab, int32_t id, int top_n);

}  // namespace moe
