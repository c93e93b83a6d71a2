#include "coordinator/inference/request.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace moe {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kNone:
      break;
  }
  return "";
}

absl::Status RequestLimits::Validate() const {
  if (max_tokens < 1) return absl::InvalidArgumentError("--max-tokens-limit must be >= 1");
  if (max_stop_strings < 0) return absl::InvalidArgumentError("--max-stop-strings must be >= 0");
  if (max_stop_bytes < 1) return absl::InvalidArgumentError("--max-stop-bytes must be >= 1");
  if (max_stop_token_ids < 0) return absl::InvalidArgumentError("max_stop_token_ids must be >= 0");
  return absl::OkStatus();
}

absl::Status Request::Validate(const MixtralConfig& config, const RequestLimits& limits,
                               const RequestFieldNames& names) const {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (absl::Status ids = config.CheckTokenIds(prompt); !ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt ", ids.message()));
  }
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.max_tokens, " must be >= 1, got ", max_tokens));
  }
  if (max_tokens > limits.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        names.max_tokens, " (", max_tokens, ") exceeds the server's limit of ", limits.max_tokens));
  }
  if (static_cast<int64_t>(prompt.size()) + max_tokens > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), " tokens) + ", names.max_tokens, " (", max_tokens,
        ") exceeds the model's context of ", config.max_position_embeddings, " positions"));
  }
  if (static_cast<int64_t>(stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat(names.stop, " holds ", stop.size(),
                                                   " strings; the server's limit is ",
                                                   limits.max_stop_strings));
  }
  for (const std::string& s : stop) {
    if (s.empty())
      return absl::InvalidArgumentError(absl::StrCat(names.stop, " holds an empty string"));
    if (static_cast<int64_t>(s.size()) > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(names.stop, " holds a string of ", s.size(),
                                                     " bytes; the server's limit is ",
                                                     limits.max_stop_bytes));
    }
  }
  if (static_cast<int64_t>(stop_token_ids.size()) > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.stop_token_ids, " holds ", stop_token_ids.size(),
                     " ids; the server's limit is ", limits.max_stop_token_ids));
  }
  if (absl::Status ids = config.CheckTokenIds(stop_token_ids); !ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(names.stop_token_ids, " ", ids.message()));
  }
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(names.min_tokens, " must be in [0, ",
                                                   names.max_tokens, " = ", max_tokens, "], got ",
                                                   min_tokens));
  }
  if (logprobs < -1 || logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        names.logprobs, " must be in [0, ", kMaxTopLogprobs, "] alternatives, got ", logprobs));
  }
  if (absl::Status s = sampling.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(names.sampling_prefix, s.message()));
  }
  if (label.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        names.label, " is ", label.size(), " bytes; at most ", kMaxLabelBytes, " are allowed"));
  }
  for (char c : label) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat(names.label, " may hold only letters, digits and . _ : - (found byte 0x",
                       absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
