// Request: one generation request as every entry point hands it to the scheduler (the gRPC
// service, the one-shot generate modes, moe-generate), with the one Validate() they all use, and
// the one way a generation ends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/inference/logprobs.h"
#include "coordinator/inference/sampler.h"
#include "core/model/config.h"

namespace moe {

// Why a sequence stopped. A request that fails or whose client leaves has no finish reason: it
// ends with a non-OK status instead.
enum class FinishReason { kNone, kEos, kLength, kStop };
// "eos", "length", "stop" ("" for kNone): the spelling of logs, metrics and --stats.
const char* FinishReasonName(FinishReason reason);

// What a server allows beyond what the model allows.
struct RequestLimits {
  int max_tokens = 4096;        // largest max_tokens a request may ask for
  int max_stop_strings = 16;    // stop strings per request (each is matched on every token)
  int max_stop_bytes = 256;     // bytes per stop string (text is held back while it may match)
  int max_stop_token_ids = 64;  // stop token ids per request

  absl::Status Validate() const;
};

// How an entry point names the request's fields in its errors, so that one Validate() speaks the
// language of each interface (the gRPC fields by default; the command line names its flags).
struct RequestFieldNames {
  std::string max_tokens = "sampling.max_tokens";
  std::string sampling_prefix = "sampling.";  // before "temperature", "top_p", "top_k"
  std::string stop = "sampling.stop";
  std::string stop_token_ids = "sampling.stop_token_ids";
  std::string min_tokens = "sampling.min_tokens";
  std::string logprobs = "logprobs";
  std::string label = "label";
};

// A workload label's limits: telemetry groups by it and the routing trace's events file records
// it, so it is short and needs no escaping anywhere (Prometheus, JSON, file names).
inline constexpr size_t kMaxLabelBytes = 64;  // of [A-Za-z0-9._:-]

struct Request {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  SamplingParams sampling;
  int max_tokens = 16;            // tokens to generate at most, >= 1
  std::vector<std::string> stop;  // generation ends before the first of these strings
  // vLLM's extensions of the OpenAI API, with its meanings:
  std::vector<int32_t> stop_token_ids;  // generation ends after one of these (finish "stop"); the
                                        // token is counted, its text not returned
  int min_tokens = 0;  // EOS and stop_token_ids are not chosen, nor stop strings matched, before
                       // this many tokens (<= max_tokens)
  bool ignore_eos = false;  // EOS does not end the generation (it is generated and counted like
                            // any token, its text not returned): runs to max_tokens or a stop
  // Log-probabilities (coordinator/inference/logprobs.h): of each generated token with this many
  // alternatives (0..kMaxTopLogprobs; -1: none), and of the prompt's tokens after the first.
  int logprobs = -1;
  bool prompt_logprobs = false;
  std::string label;  // the client's workload label: "" (none) or up to 64 bytes of
                      // [A-Za-z0-9._:-], e.g. "chat", "eval:gsm8k"

  // Checks the request against the model and the limits before any work: a non-empty prompt of
  // ids in the vocabulary, 1 <= max_tokens <= limits.max_tokens, prompt + max_tokens within the
  // model's context, sampling parameters in range, stop token ids in the vocabulary, min_tokens
  // <= max_tokens, a well-formed label. INVALID_ARGUMENT names
  // the field.
  absl::Status Validate(const MixtralConfig& config, const RequestLimits& limits,
                        const RequestFieldNames& names = {}) const;
};

}  // namespace moe
