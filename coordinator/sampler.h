// Sampler: picks the next token from logits (greedy, temperature, top-k, top-p), reproducibly
// from a seed.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace moe {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax); else logits / temperature
  int top_k = 0;             // 0: no limit; else only the k most likely tokens
  float top_p = 1.0f;        // nucleus: smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;         // same seed, same prompt, same settings: same tokens

  // Says exactly which parameter is wrong.
  absl::Status Validate() const;
};

// Not thread-safe: one per sequence.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // logits: [vocab]. NaN logits are never chosen; a +inf logit is always chosen.
  int Sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;  // fully specified by the C++ standard: same stream everywhere
  std::vector<int> order_;
  std::vector<double> probs_;
  std::vector<float> clean_;  // logits with NaN replaced, only when some are not finite
};

}  // namespace moe
