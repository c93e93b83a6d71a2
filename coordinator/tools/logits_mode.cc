// Logits-dump mode: the stable interface other implementations are checked against.
#include <chrono>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/tools/modes.h"
#include "core/npy.h"
#include "core/status_macros.h"

ABSL_FLAG(std::string, tokens, "", "comma-separated token ids, e.g. 1,415,2936 (no BOS is added)");
ABSL_FLAG(std::string, out, "", "output .npy file: float32 [n_tokens, vocab]");
ABSL_FLAG(bool, incremental, false, "feed one token at a time through the KV cache");

namespace moe::cli {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseTokens(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("--tokens is empty");
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: '", part, "' is not an integer"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

bool LogitsModeRequested() {
  return !absl::GetFlag(FLAGS_tokens).empty() || !absl::GetFlag(FLAGS_out).empty();
}

absl::Status RunLogitsMode(ModelRunner* runner) {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  MOE_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ParseTokens(absl::GetFlag(FLAGS_tokens)));
  const int64_t vocab = runner->config().vocab_size;
  KvCache cache = runner->NewCache();
  std::vector<float> all;
  // One sequence (id 1) of given tokens: all of them are prompt, none sampled, even fed one by one.
  SequenceInfo info;
  info.prompt_tokens = static_cast<int32_t>(tokens.size());
  info.arrival_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  runner->BeginSequence(1, info);
  struct End {
    ModelRunner* runner;
    ~End() { runner->EndSequence(1); }
  } end{runner};
  if (absl::GetFlag(FLAGS_incremental)) {
    std::vector<float> logits;
    for (int32_t id : tokens) {
      const int32_t one[] = {id};
      const SequenceChunk chunk{&cache, one, /*all_logits=*/true, /*sequence_id=*/1, /*prefill=*/true};
      MOE_RETURN_IF_ERROR(runner->Forward({&chunk, 1}, &logits));
      all.insert(all.end(), logits.begin(), logits.end());
    }
  } else {
    const SequenceChunk chunk{&cache, tokens, /*all_logits=*/true, /*sequence_id=*/1, /*prefill=*/true};
    MOE_RETURN_IF_ERROR(runner->Forward({&chunk, 1}, &all));
  }
  return WriteNpy(out, all.data(), {static_cast<int64_t>(tokens.size()), vocab});
}

}  // namespace moe::cli
