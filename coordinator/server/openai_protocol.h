// The OpenAI HTTP API's JSON, without the HTTP: request bodies into our Request, our stream events
// into its responses and server-sent chunks, and its error shape. openai_server.cc does the I/O.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/inference/logprobs.h"
#include "coordinator/inference/request.h"
#include "coordinator/server/chat_template.h"
#include "core/model/config.h"
#include "core/model/tokenizer.h"

namespace moe::openai {

// An error as OpenAI's clients read it: the HTTP status picks the client's exception class, the
// body is {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the request field at fault; "" for none (null in the body)
  std::string code;   // machine-readable, e.g. "model_not_found"; "" for none

  std::string Body() const;  // {"error": {...}}
};

// The HTTP status and type for a status of ours: INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
// PERMISSION_DENIED 403, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, anything else 500. The field at fault travels as the status payload
// kParamPayload (set by the parsers here).
ApiError ErrorFromStatus(const absl::Status& status);
inline constexpr char kParamPayload[] = "moe.openai/param";

enum class Endpoint { kCompletions, kChat };

// What the parsers need from the server: the model, the tokenizer, the limits.
struct ServedModel {
  std::string id;                      // what /v1/models lists and requests name
  const Tokenizer* tokenizer = nullptr;
  const MixtralConfig* config = nullptr;
  RequestLimits limits;                // the scheduler's: max_tokens, stop strings
  int64_t max_prompt_bytes = 1 << 20;  // text of a prompt (all messages of a chat), before tokenizing
  ChatTemplate chat = ChatTemplate::MistralV1();
  int64_t created = 0;                 // unix seconds the server started: /v1/models' "created"
};

struct ParsedRequest {
  Request request;             // tokens, sampling, max_tokens, stop, label: validated
  // Completions may send several prompts at once: each is a sequence of its own (the others are
  // `request` with these prompts, validated too), answered as choices 0, 1, ... in order.
  std::vector<std::vector<int32_t>> more_prompts;
  // OpenAI's n: choices per prompt, indexed prompt * n + j; choice j samples with seed + j.
  int n = 1;
  bool echo = false;  // completions: the prompt's text (and log-probabilities) first
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
};
// Prompts one completions request may hold, and choices (prompts x n) any request may ask for.
inline constexpr int kMaxPromptsPerRequest = 64;
inline constexpr int kMaxChoicesPerRequest = 64;

// POST /v1/completions and /v1/chat/completions. The fields that map to ours: model (must be the
// served one when given), prompt (a string, a token-id list, or a list of up to
// kMaxPromptsPerRequest of either) or messages, max_tokens (max_completion_tokens for chat),
// temperature, top_p, seed, stop, presence_penalty, frequency_penalty, logprobs (completions:
// 0..20 alternatives; chat: true, with top_logprobs 0..20), echo (completions), n (choices per
// prompt, prompts x n <= kMaxChoicesPerRequest), stream,
// stream_options.include_usage, user (ignored); vLLM's extensions top_k, repetition_penalty,
// stop_token_ids, min_tokens, ignore_eos; label (ours: the telemetry's workload label). Fields we
// cannot honour (best_of, logit_bias, tools, suffix, and vLLM's min_p, beam search,
// prompt_logprobs, guided decoding, ...) are refused by name rather than silently ignored; fields
// we do not know are ignored, as OpenAI's server does. OpenAI's defaults: temperature 1, top_p 1,
// a random seed; max_tokens 16 for completions, the rest of the context (within the server's
// limit) for chat. Errors carry the field in kParamPayload; the Request is validated.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, const std::string& body, const ServedModel& model);

// One choice of a response: its text and how it ended; with `logprobs`, its tokens'
// log-probabilities in order (an echoed prompt's first, the first of them without one).
struct Choice {
  int index = 0;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  bool logprobs = false;
  std::vector<TokenLogprob> tokens;
  size_t text_offset = 0;  // a streamed chunk's: the bytes of the choice's tokens before its own
};

// Usage as OpenAI counts it.
struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// "stop" (EOS or a stop string) or "length".
const char* FinishReasonString(FinishReason reason);

// Responses. id: "cmpl-N" / "chatcmpl-N" with N our request number; created: unix seconds.
struct ResponseHead {
  std::string id;
  int64_t created = 0;
  std::string model;
};
std::string ResponseId(Endpoint endpoint, uint64_t request_id);
std::string ResponseId(Endpoint endpoint,
                       const std::string& request_id);  // a client's X-Request-Id
// The whole (non-streamed) response.
std::string CompletionBody(Endpoint endpoint, const ResponseHead& head, const std::string& text,
                           FinishReason finish, const Usage& usage);
// One streamed chunk's JSON (the caller frames it as "data: ...\n\n"). Chat's first chunk carries
// the role (role_chunk, with empty content); finish != kNone marks the last chunk of text.
std::string StreamChunk(Endpoint endpoint, const ResponseHead& head, const std::string& text, FinishReason finish,
                        bool role_chunk = false);
// The same with several choices and log-probabilities: completions' {tokens, token_logprobs,
// top_logprobs, text_offset} (top_logprobs hold the chosen token beside the top ones, as vLLM's),
// chat's {content: [{token, logprob, bytes, top_logprobs}]}; token strings are the tokenizer's.
std::string CompletionBody(Endpoint endpoint, const ResponseHead& head,
                           const std::vector<Choice>& choices, const Usage& usage,
                           const Tokenizer& tokenizer);
std::string StreamChunk(Endpoint endpoint, const ResponseHead& head, const Choice& choice,
                        bool role_chunk, const Tokenizer& tokenizer);
// The chunk stream_options.include_usage asks for: no choices, the usage.
std::string UsageChunk(Endpoint endpoint, const ResponseHead& head, const Usage& usage);
// vLLM's POST /tokenize: {"prompt": text, "add_special_tokens": true} or {"messages": [...]} (the
// chat template's ids) -> {"tokens": [...], "count": n, "max_model_len": m}, and
// "token_strs" with "return_token_strs": true. POST /detokenize: {"tokens": [...]} ->
// {"prompt": text}. Errors as ParseRequest's.
absl::StatusOr<std::string> TokenizeResponse(const std::string& body, const ServedModel& model);
absl::StatusOr<std::string> DetokenizeResponse(const std::string& body, const ServedModel& model);
// A client's X-Request-Id as ours may use it: up to 128 bytes of [A-Za-z0-9._:-]; "" otherwise.
std::string ClientRequestId(const std::string& header);

// GET /v1/models (list) and /v1/models/{id} (one).
std::string ModelObject(const ServedModel& model);
std::string ModelList(const ServedModel& model);

}  // namespace moe::openai
