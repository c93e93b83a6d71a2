// The OpenAI HTTP API's JSON, without the HTTP: request bodies into our Request, our stream events
// into its responses and server-sent chunks, and its error shape. openai_server.cc does the I/O.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/request.h"
#include "coordinator/server/chat_template.h"
#include "core/config.h"
#include "core/tokenizer.h"

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
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
};

// POST /v1/completions and /v1/chat/completions. The fields that map to ours: model (must be the
// served one when given), prompt (a string, one token-id list, or a list of one of either) or
// messages, max_tokens (max_completion_tokens for chat), temperature, top_p, top_k (an
// extension), seed, stop, n = 1, stream, stream_options.include_usage, user (ignored), label (an
// extension: the telemetry's workload label). Fields we cannot honour (n > 1, logprobs, echo,
// penalties, logit_bias, tools, suffix) are refused by name rather than silently ignored; fields
// we do not know are ignored, as OpenAI's server does. OpenAI's defaults: temperature 1, top_p 1,
// a random seed; max_tokens 16 for completions, the rest of the context (within the server's
// limit) for chat. Errors carry the field in kParamPayload; the Request is validated.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, const std::string& body, const ServedModel& model);

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
// The whole (non-streamed) response.
std::string CompletionBody(Endpoint endpoint, const ResponseHead& head, const std::string& text,
                           FinishReason finish, const Usage& usage);
// One streamed chunk's JSON (the caller frames it as "data: ...\n\n"). Chat's first chunk carries
// the role (role_chunk, with empty content); finish != kNone marks the last chunk of text.
std::string StreamChunk(Endpoint endpoint, const ResponseHead& head, const std::string& text, FinishReason finish,
                        bool role_chunk = false);
// The chunk stream_options.include_usage asks for: no choices, the usage.
std::string UsageChunk(Endpoint endpoint, const ResponseHead& head, const Usage& usage);
// GET /v1/models (list) and /v1/models/{id} (one).
std::string ModelObject(const ServedModel& model);
std::string ModelList(const ServedModel& model);

}  // namespace moe::openai
