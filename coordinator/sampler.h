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

  // The same choice from a row's best candidates, as kernels::Backend::TopK gives them (values
  // by falling logit, ties to the lower id) for a row whose logits are all finite: the GPU sends
  // these instead of the whole row. n must be at least CandidatesNeeded(vocab).
  int SampleFromCandidates(const float* values, const int32_t* ids, int64_t n);
  // Candidates that make SampleFromCandidates equal Sample: 1 when greedy, top_k (at most vocab)
  // when set, else 0: sampling without top_k needs the whole row.
  int64_t CandidatesNeeded(int64_t vocab) const;

 private:
  // The draw itself, over n candidates by falling logit (first = the largest).
  int Draw(const float* values, const int32_t* ids, int64_t n);

  SamplingParams params_;
  std::mt19937_64 rng_;  // fully specified by the C++ standard: same stream everywhere
  std::vector<int32_t> order_;
  std::vector<float> sorted_;  // logits in order_
  std::vector<double> probs_;
  std::vector<float> clean_;  // logits with NaN replaced, only when some are not finite
};

}  // namespace moe
