#include "core/cli/sampling_flags.h"

#include <cmath>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(int, max_tokens, 64, "sampling: tokens to generate at most");
ABSL_FLAG(double, temperature, 0.0, "sampling: 0 = greedy; else sample from softmax(logits / T)");
ABSL_FLAG(
    double, top_p, 1.0,
    "sampling: nucleus sampling, keep the fewest tokens reaching this probability, in (0, 1]");
ABSL_FLAG(int, top_k, 0, "sampling: keep only the k most likely tokens (0 = all)");
ABSL_FLAG(uint64_t, seed, 0, "sampling: random seed; same seed, same text");
ABSL_FLAG(std::vector<std::string>, stop, {},
          "sampling: stop strings, comma-separated: generation ends before the first one (not "
          "printed)");
ABSL_FLAG(double, repetition_penalty, 1.0,
          "sampling: Hugging Face's repetition penalty over prompt and output (> 0; 1 = none)");
ABSL_FLAG(double, frequency_penalty, 0.0, "sampling: OpenAI's frequency penalty in [-2, 2]");
ABSL_FLAG(double, presence_penalty, 0.0, "sampling: OpenAI's presence penalty in [-2, 2]");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {},
          "sampling: comma-separated token ids that end the generation (finish reason stop)");
ABSL_FLAG(int, min_tokens, 0,
          "sampling: no EOS, stop token or stop string before this many tokens");
ABSL_FLAG(bool, ignore_eos, false, "sampling: EOS does not end the generation (fixed-length runs)");

namespace moe::cli {

absl::StatusOr<SamplingFlags> SamplingFromFlags() {
  SamplingFlags f;
  f.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  f.temperature = absl::GetFlag(FLAGS_temperature);
  f.top_p = absl::GetFlag(FLAGS_top_p);
  f.top_k = absl::GetFlag(FLAGS_top_k);
  f.seed = absl::GetFlag(FLAGS_seed);
  f.stop = absl::GetFlag(FLAGS_stop);
  f.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  f.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  f.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  f.min_tokens = absl::GetFlag(FLAGS_min_tokens);
  f.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  if (f.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens must be at least 1");
  if (!(f.temperature >= 0) || !std::isfinite(f.temperature)) {
    return absl::InvalidArgumentError("--temperature must be a finite number >= 0 (0 = greedy)");
  }
  if (!(f.top_p > 0 && f.top_p <= 1))
    return absl::InvalidArgumentError("--top-p must be in (0, 1]");
  if (f.top_k < 0) return absl::InvalidArgumentError("--top-k must be >= 0 (0 = no limit)");
  if (f.min_tokens < 0) return absl::InvalidArgumentError("--min-tokens must be >= 0");
  for (const std::string& id : absl::GetFlag(FLAGS_stop_token_ids)) {
    int32_t v = 0;
    if (!absl::SimpleAtoi(id, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stop-token-ids: '", id, "' is not an integer"));
    }
    f.stop_token_ids.push_back(v);
  }
  return f;
}

}  // namespace moe::cli
