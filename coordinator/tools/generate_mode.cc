// Generation mode: prompt text in, streamed text out, through the scheduler the server uses.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/inference/generation.h"
#include "coordinator/tools/modes.h"
#include "core/base/status_macros.h"
#include "core/cli/cli.h"
#include "core/cli/sampling_flags.h"
#include "core/model/tokenizer.h"

ABSL_FLAG(std::string, prompt, "", "prompt text; BOS is prepended");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.model (default: the model's, else the bundled one)");
ABSL_FLAG(bool, stats, false, "print timing to stderr at the end");
ABSL_FLAG(int, prefill_chunk, 512, "prompt tokens per forward step (bounds one step's work)");
ABSL_FLAG(bool, print_ids, false, "print the generated token ids (comma-separated) instead of text");

namespace moe::cli {

bool GenerateModeRequested() { return !absl::GetFlag(FLAGS_prompt).empty(); }

absl::Status RunGenerateMode(ModelRunner* runner, const std::string& model_dir) {
  const MixtralConfig& config = runner->config();
  std::string tok_path = absl::GetFlag(FLAGS_tokenizer);
  if (tok_path.empty()) tok_path = DefaultTokenizerPath(model_dir);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(tok_path));
  if (tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer ", tok_path, " has ",
                                                   tokenizer->vocab_size(),
                                                   " pieces but the model's vocab_size is ",
                                                   config.vocab_size));
  }
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty (--prompt)");
  Request request;
  for (int id : tokenizer->Encode(prompt, /*add_bos=*/true)) request.prompt.push_back(id);
  MOE_ASSIGN_OR_RETURN(const SamplingFlags flags, SamplingFromFlags());
  request.max_tokens = flags.max_tokens;
  request.sampling.temperature = static_cast<float>(flags.temperature);
  request.sampling.top_p = static_cast<float>(flags.top_p);
  request.sampling.top_k = flags.top_k;
  request.sampling.seed = flags.seed;
  request.sampling.repetition_penalty = static_cast<float>(flags.repetition_penalty);
  request.sampling.frequency_penalty = static_cast<float>(flags.frequency_penalty);
  request.sampling.presence_penalty = static_cast<float>(flags.presence_penalty);
  request.stop = flags.stop;
  request.stop_token_ids = flags.stop_token_ids;
  request.min_tokens = flags.min_tokens;
  request.ignore_eos = flags.ignore_eos;
  // The command line has no server limit: the model's context bounds max_tokens.
  const RequestLimits limits{request.max_tokens};
  MOE_RETURN_IF_ERROR(request.Validate(
      config, limits, RequestFieldNames{"max_tokens", "", "stop", "stop_token_ids", "min_tokens"}));

  const bool print_ids = absl::GetFlag(FLAGS_print_ids);
  const size_t prompt_tokens = request.prompt.size();
  MOE_ASSIGN_OR_RETURN(
      GenerationResult result,
      Generate(runner, tokenizer.get(), std::move(request), absl::GetFlag(FLAGS_prefill_chunk),
               [&](const StreamEvent& e) {
                 if (!print_ids) std::cout << e.text << std::flush;
               }));
  std::cout << (print_ids ? absl::StrJoin(result.tokens, ",") : "") << std::endl;
  if (absl::GetFlag(FLAGS_stats)) {
    const size_t n = result.tokens.size();
    const double decode_s = (result.total_ms - result.time_to_first_token_ms) / 1e3;
    std::fprintf(stderr,
                 "prompt %zu tokens, prefill %.3f s; generated %zu tokens (%s), decode %.2f tokens/s\n",
                 prompt_tokens, result.time_to_first_token_ms / 1e3, n,
                 FinishReasonName(result.finish),
                 n > 1 && decode_s > 0 ? static_cast<double>(n - 1) / decode_s : 0.0);
  }
  return absl::OkStatus();
}

}  // namespace moe::cli
