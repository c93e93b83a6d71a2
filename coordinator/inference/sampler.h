// Sampler: picks the next token from logits (greedy, temperature, top-k, top-p), reproducibly
// from a seed, after the logit processors a request asks for (penalties on tokens already seen,
// tokens banned until a sequence is long enough).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moe {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax); else logits / temperature
  int top_k = 0;             // 0: no limit; else only the k most likely tokens
  float top_p = 1.0f;        // nucleus: smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;         // same seed, same prompt, same settings: same tokens
  // Penalties on tokens already seen, applied to the logits before everything above, in vLLM's
  // order: repetition first, then frequency and presence.
  float repetition_penalty = 1.0f;  // Hugging Face's: the logit of every token of the prompt or
                                    // the output so far is divided by it if > 0, else multiplied
  float frequency_penalty = 0.0f;   // OpenAI's: minus this times the times the token was generated
  float presence_penalty = 0.0f;    // OpenAI's: minus this once if the token was generated

  bool has_penalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }

  // Says exactly which parameter is wrong.
  absl::Status Validate() const;
};

// Not thread-safe: one per sequence.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // The sequence so far, which the penalties read: the prompt once, then every token chosen.
  void SetPrompt(absl::Span<const int32_t> prompt);
  void Accept(int32_t id);
  // These ids are never chosen while fewer than `until` tokens were accepted (min_tokens: EOS and
  // the stop token ids).
  void Ban(absl::Span<const int32_t> ids, int until);
  // Whether logits are processed (a penalty, or a ban in force): the whole row is then needed.
  bool processes_logits() const;

  // logits: [vocab]. NaN logits are never chosen; a +inf logit is always chosen (unless banned).
  int Sample(const float* logits, int64_t vocab);

  // The same choice from a row's best candidates, as kernels::Backend::TopK gives them (values
  // by falling logit, ties to the lower id) for a row whose logits are all finite: the GPU sends
  // these instead of the whole row. n must be at least CandidatesNeeded(vocab).
  int SampleFromCandidates(const float* values, const int32_t* ids, int64_t n);
  // Candidates that make SampleFromCandidates equal Sample: 1 when greedy, top_k (at most vocab)
  // when set, else 0: sampling without top_k, or with logits processed, needs the whole row.
  int64_t CandidatesNeeded(int64_t vocab) const;

 private:
  // The draw itself, over n candidates by falling logit (first = the largest).
  int Draw(const float* values, const int32_t* ids, int64_t n);

  // The penalties and bans on a copy of the row (processed_).
  const float* Process(const float* logits, int64_t vocab);

  SamplingParams params_;
  std::vector<int32_t> prompt_;                      // for the repetition penalty
  absl::flat_hash_map<int32_t, int32_t> generated_;  // id -> times chosen
  int accepted_ = 0;
  struct BanRule {
    std::vector<int32_t> ids;
    int until;
  };
  std::vector<BanRule> bans_;
  std::vector<float> processed_;
  std::mt19937_64 rng_;  // fully specified by the C++ standard: same stream everywhere
  std::vector<int32_t> order_;
  std::vector<float> sorted_;  // logits in order_
  std::vector<double> probs_;
  std::vector<float> clean_;  // logits with NaN replaced, only when some are not finite
};

}  // namespace moe
