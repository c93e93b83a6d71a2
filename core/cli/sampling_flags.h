// The sampling flags of every program that generates (moe-generate, moe-coordinator --prompt,
// moe-cli generate and bench), declared once here so that they are spelled, defaulted and checked
// alike everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::cli {

struct SamplingFlags {
  int max_tokens = 64;                  // --max-tokens: tokens to generate at most, >= 1
  double temperature = 0;               // --temperature: 0 = greedy
  double top_p = 1;                     // --top-p: nucleus sampling, in (0, 1]
  int top_k = 0;                        // --top-k: the k most likely tokens only (0 = all)
  uint64_t seed = 0;                    // --seed: same seed, same text
  std::vector<std::string> stop;        // --stop: generation ends before the first of these
  double repetition_penalty = 1;        // --repetition-penalty: Hugging Face's (> 0; 1 = none)
  double frequency_penalty = 0;         // --frequency-penalty: OpenAI's, in [-2, 2]
  double presence_penalty = 0;          // --presence-penalty: OpenAI's, in [-2, 2]
  std::vector<int32_t> stop_token_ids;  // --stop-token-ids: generation ends after one of these
  int min_tokens = 0;                   // --min-tokens: no EOS or stop before this many tokens
  bool ignore_eos = false;              // --ignore-eos: EOS does not end the generation
};

// The flags as given. InvalidArgument naming the flag for a value no request can take (the
// penalties' ranges and what depends on the model are left to the request's own validation, which
// names them too).
absl::StatusOr<SamplingFlags> SamplingFromFlags();

}  // namespace moe::cli
