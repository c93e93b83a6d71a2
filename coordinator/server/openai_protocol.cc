#include "coordinator/server/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::openai {
namespace {

using nlohmann::json;

// Nesting beyond any request's: refused before parsing, so a hostile body cannot make the parser
// or the destructor walk a million levels.
constexpr int kMaxJsonDepth = 32;

absl::Status FieldError(const std::string& param, const std::string& message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kParamPayload, absl::Cord(param));
  return s;
}

// The JSON's shape, scanned before anything is built: a body within the byte limit can still hold
// millions of empty objects or arrays, each a heap node once parsed (220 MB for 6 MB of "{},").
// Requests need few containers; scalars are cheap in a DOM (ints inline) and a token-id prompt
// may hold many.
constexpr int kMaxJsonContainers = 4096;
constexpr int kMaxJsonValues = 1 << 18;

absl::Status ShapeWithin(const std::string& body) {
  int depth = 0, containers = 0, values = 1;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("the body nests deeper than ", kMaxJsonDepth, " levels"));
      }
      if (++containers > kMaxJsonContainers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the body holds more than ", kMaxJsonContainers, " JSON objects and arrays"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && ++values > kMaxJsonValues) {
      return absl::InvalidArgumentError(
          absl::StrCat("the body holds more than ", kMaxJsonValues, " JSON values"));
    }
  }
  return absl::OkStatus();
}

const json* Field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return FieldError(key, absl::StrCat(key, " must be a number"));
  return v->get<double>();
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    // Whole values an int64 holds (1e18 included): range checks then report them as sent.
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
  }
  return FieldError(key, absl::StrCat(key, " must be an integer"));
}

absl::StatusOr<bool> Bool(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return false;
  if (!v->is_boolean()) return FieldError(key, absl::StrCat(key, " must be true or false"));
  return v->get<bool>();
}

// A field whose only value we honour is its default: refused by name otherwise, so a client that
// relies on it learns at once instead of getting something else.
absl::Status OnlyDefault(const json& body, const char* key, const json& default_value, const char* why) {
  const json* v = Field(body, key);
  if (v == nullptr || *v == default_value) return absl::OkStatus();
  if (default_value.is_boolean() && v->is_boolean() && v->get<bool>() == default_value.get<bool>()) {
    return absl::OkStatus();
  }
  return FieldError(key, absl::StrCat(key, " is not supported by this server (", why, ")"));
}

absl::Status TextWithin(const std::string& text, int64_t used, int64_t limit, const char* param) {
  if (used + static_cast<int64_t>(text.size()) > limit) {
    return FieldError(param, absl::StrCat(param, " holds more than the server's limit of ", limit,
                                          " bytes of text (--max-prompt-bytes)"));
  }
  return absl::OkStatus();
}

// A token-id list: JSON integers in int32.
absl::StatusOr<std::vector<int32_t>> TokenIds(const json& list, const char* param) {
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (const json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return FieldError(param, absl::StrCat(param, " must be a string or a list of token ids (integers >= 0)"));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

// The completions prompt: a string, a token-id list, or a list of several of either (each its
// own sequence). Text is counted against max_prompt_bytes across all of them.
absl::StatusOr<std::vector<std::vector<int32_t>>> Prompts(const json& body,
                                                          const ServedModel& model) {
  const json* p = Field(body, "prompt");
  if (p == nullptr) return FieldError("prompt", "prompt is required");
  const bool one_ids =
      p->is_array() && !p->empty() &&
      std::all_of(p->begin(), p->end(), [](const json& x) { return x.is_number(); });
  std::vector<const json*> each;
  if (p->is_string() || one_ids || (p->is_array() && p->empty())) {
    each.push_back(p);
  } else if (p->is_array()) {
    if (static_cast<int>(p->size()) > kMaxPromptsPerRequest) {
      return FieldError(
          "prompt", absl::StrCat("prompt holds ", p->size(), " prompts; the server takes at most ",
                                 kMaxPromptsPerRequest, " per request"));
    }
    for (const json& x : *p) each.push_back(&x);
  } else {
    return FieldError("prompt",
                      "prompt must be a string, a list of token ids, or a list of either");
  }
  std::vector<std::vector<int32_t>> out;
  int64_t bytes = 0;
  for (const json* one : each) {
    if (one->is_string()) {
      const std::string& text = one->get_ref<const std::string&>();
      if (absl::Status s = TextWithin(text, bytes, model.max_prompt_bytes, "prompt"); !s.ok())
        return s;
      bytes += static_cast<int64_t>(text.size());
      std::vector<int32_t> ids;
      if (!text.empty()) {
        for (int id : model.tokenizer->Encode(text, /*add_bos=*/true)) ids.push_back(id);
      }
      out.push_back(std::move(ids));
    } else if (one->is_array()) {
      absl::StatusOr<std::vector<int32_t>> ids = TokenIds(*one, "prompt");
      if (!ids.ok()) return ids.status();
      out.push_back(*std::move(ids));
    } else {
      return FieldError("prompt",
                        "prompt must be a string, a list of token ids, or a list of either");
    }
  }
  return out;
}

absl::StatusOr<std::string> MessageContent(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {  // content parts: only text ones
    std::string text;
    for (const json& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
        return FieldError("messages", absl::StrCat(where, ".content holds a part that is not {\"type\": \"text\", ",
                                                   "\"text\": ...}; this server takes text only"));
      }
      text += part["text"].get<std::string>();
    }
    return text;
  }
  return FieldError("messages", absl::StrCat(where, ".content must be a string or a list of text parts"));
}

absl::StatusOr<std::vector<int32_t>> ChatIds(const json& body, const ServedModel& model) {
  if (model.chat.kind() == ChatTemplateKind::kNone) {
    return FieldError("messages", absl::StrCat("chat is off on this server: ", model.chat.disabled_reason()));
  }
  const json* m = Field(body, "messages");
  if (m == nullptr || !m->is_array()) return FieldError("messages", "messages must be a list of messages");
  std::vector<ChatMessage> messages;
  int64_t bytes = 0;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string()) {
      return FieldError("messages", absl::StrCat(where, " must be an object with a string role"));
    }
    if (Field(msg, "tool_calls") != nullptr || Field(msg, "function_call") != nullptr) {
      return FieldError("messages", absl::StrCat(where, " has tool calls; this server has no tools"));
    }
    ChatMessage cm{msg["role"].get<std::string>(), ""};
    if (const json* content = Field(msg, "content"); content != nullptr) {
      absl::StatusOr<std::string> text = MessageContent(*content, where);
      if (!text.ok()) return text.status();
      cm.content = *std::move(text);
    } else if (cm.role != "assistant") {
      return FieldError("messages", absl::StrCat(where, " has no content"));
    }
    if (absl::Status s = TextWithin(cm.content, bytes, model.max_prompt_bytes, "messages"); !s.ok()) return s;
    bytes += static_cast<int64_t>(cm.content.size());
    messages.push_back(std::move(cm));
  }
  absl::StatusOr<std::vector<int32_t>> ids = model.chat.Render(messages, *model.tokenizer);
  if (!ids.ok()) return FieldError("messages", std::string(ids.status().message()));
  return ids;
}

absl::StatusOr<std::vector<std::string>> StopStrings(const json& body) {
  const json* v = Field(body, "stop");
  std::vector<std::string> stop;
  if (v == nullptr) return stop;
  if (v->is_string()) {
    stop.push_back(v->get<std::string>());
    return stop;
  }
  if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) return FieldError("stop", "stop must be a string or a list of strings");
      stop.push_back(s.get<std::string>());
    }
    return stop;
  }
  return FieldError("stop", "stop must be a string or a list of strings");
}

json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json Head(Endpoint endpoint, const ResponseHead& head, bool chunk) {
  const char* object = endpoint == Endpoint::kCompletions ? "text_completion"
                       : chunk                            ? "chat.completion.chunk"
                                                          : "chat.completion";
  return {{"id", head.id}, {"object", object}, {"created", head.created}, {"model", head.model}};
}

json FinishJson(FinishReason finish) {
  return finish == FinishReason::kNone ? json(nullptr) : json(FinishReasonString(finish));
}

// Generated text is valid UTF-8 (the detokenizer holds back partial characters); replace rather
// than throw should that ever break.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

std::string ApiError::Body() const {
  const json error = {{"error",
                       {{"message", message},
                        {"type", type},
                        {"param", param.empty() ? json(nullptr) : json(param)},
                        {"code", code.empty() ? json(nullptr) : json(code)}}}};
  return Dump(error);
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  if (auto param = status.GetPayload(kParamPayload); param.has_value()) {
    e.param = std::string(*param);
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: e.http_status = 400; e.type = "invalid_request_error"; break;
    case absl::StatusCode::kUnauthenticated: e.http_status = 401; e.type = "authentication_error"; break;
    case absl::StatusCode::kPermissionDenied: e.http_status = 403; e.type = "permission_error"; break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "not_found_error";
      if (e.param == "model") e.code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted: e.http_status = 429; e.type = "rate_limit_error"; break;
    case absl::StatusCode::kUnavailable: e.http_status = 503; e.type = "server_error"; break;
    case absl::StatusCode::kDeadlineExceeded: e.http_status = 504; e.type = "server_error"; break;
    default: e.http_status = 500; e.type = "server_error"; break;
  }
  return e;
}

namespace {

// The model named (if any) is the one served, and nothing is asked that this server cannot do.
absl::Status CheckModelAndUnsupported(const json& j, const ServedModel& model) {
  if (const json* name = Field(j, "model"); name != nullptr) {
    if (!name->is_string()) return FieldError("model", "model must be a string");
    if (name->get<std::string>() != model.id) {
      absl::Status s = absl::NotFoundError(absl::StrCat("the model `", name->get<std::string>(),
                                                        "` does not exist; this server serves `", model.id, "`"));
      s.SetPayload(kParamPayload, absl::Cord("model"));
      return s;
    }
  }
  // What we cannot do, by name.
  for (absl::Status s :
       {OnlyDefault(j, "best_of", 1, "no server-side ranking of choices"),
        OnlyDefault(j, "suffix", "", "no insertion"),
        OnlyDefault(j, "logit_bias", json::object(), "no logit bias"),
        // vLLM's extensions that other tools send: refused, not ignored.
        OnlyDefault(j, "min_p", 0, "no min_p sampling"),
        OnlyDefault(j, "use_beam_search", false, "no beam search"),
        OnlyDefault(j, "length_penalty", 1, "no beam search"),
        OnlyDefault(j, "prompt_logprobs", 0, "no log probabilities"),
        OnlyDefault(j, "include_stop_str_in_output", false, "stop strings are not returned"),
        OnlyDefault(j, "skip_special_tokens", true, "special tokens have no text"),
        OnlyDefault(j, "allowed_token_ids", json::array(), "no token restrictions"),
        OnlyDefault(j, "bad_words", json::array(), "no token restrictions"),
        OnlyDefault(j, "truncate_prompt_tokens", 0, "prompts are not truncated"),
        OnlyDefault(j, "guided_json", json::object(), "no guided decoding"),
        OnlyDefault(j, "guided_regex", "", "no guided decoding"),
        OnlyDefault(j, "guided_choice", json::array(), "no guided decoding"),
        OnlyDefault(j, "guided_grammar", "", "no guided decoding"),
        OnlyDefault(j, "tools", json::array(), "no tools"),
        OnlyDefault(j, "functions", json::array(), "no tools"),
        OnlyDefault(j, "tool_choice", "none", "no tools"),
        OnlyDefault(j, "response_format", json{{"type", "text"}}, "text only")}) {
    if (!s.ok()) return s;
  }

  return absl::OkStatus();
}

// The prompt (completions: one or several; chat: the messages through the chat template).
absl::Status ParsePrompts(const json& j, bool chat, const ServedModel& model,
                          ParsedRequest* parsed) {
  Request& r = parsed->request;
  if (chat) {
    absl::StatusOr<std::vector<int32_t>> ids = ChatIds(j, model);
    if (!ids.ok()) return ids.status();
    r.prompt = *std::move(ids);
  } else {
    absl::StatusOr<std::vector<std::vector<int32_t>>> prompts = Prompts(j, model);
    if (!prompts.ok()) return prompts.status();
    r.prompt = std::move(prompts->front());
    parsed->more_prompts.assign(std::make_move_iterator(prompts->begin() + 1),
                                std::make_move_iterator(prompts->end()));
  }

  return absl::OkStatus();
}

// max_tokens (chat: or max_completion_tokens), with OpenAI's defaults; returns the field's name
// as sent, for later messages. REQUIRES: the prompt parsed (chat's default depends on it).
absl::StatusOr<const char*> ParseMaxTokens(const json& j, bool chat, const ServedModel& model,
                                           Request* request) {
  Request& r = *request;
  const char* max_tokens_name = "max_tokens";
  absl::StatusOr<std::optional<int64_t>> max_tokens = Integer(j, "max_tokens");
  if (!max_tokens.ok()) return max_tokens.status();
  if (chat && !max_tokens->has_value()) {
    max_tokens = Integer(j, "max_completion_tokens");
    if (!max_tokens.ok()) return max_tokens.status();
    max_tokens_name = "max_completion_tokens";
  }
  if (max_tokens->has_value()) {
    const int64_t n = **max_tokens;
    // Checked here, as sent: past an int, Request::Validate would see it clamped.
    if (n < 1) {
      return FieldError(max_tokens_name, absl::StrCat(max_tokens_name, " must be >= 1, got ", n));
    }
    if (n > model.limits.max_tokens) {
      return FieldError(max_tokens_name,
                        absl::StrCat(max_tokens_name, " (", n, ") exceeds the server's limit of ",
                                     model.limits.max_tokens));
    }
    r.max_tokens = static_cast<int>(n);
  } else if (chat) {
    // OpenAI's chat default: until the model stops, here within the context and the server's limit.
    const int64_t room = model.config->max_position_embeddings - static_cast<int64_t>(r.prompt.size());
    r.max_tokens = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(model.limits.max_tokens, room)));
  } else {
    r.max_tokens = 16;  // OpenAI's completions default
  }

  return max_tokens_name;
}

// temperature, top_p, top_k, seed and the penalties.
absl::Status ParseSampling(const json& j, Request* request) {
  Request& r = *request;
  absl::StatusOr<std::optional<double>> temperature = Number(j, "temperature");
  if (!temperature.ok()) return temperature.status();
  r.sampling.temperature = static_cast<float>(temperature->value_or(1.0));
  absl::StatusOr<std::optional<double>> top_p = Number(j, "top_p");
  if (!top_p.ok()) return top_p.status();
  // Checked as sent: 1.0000001 would round to a float that prints as 1.
  if (const double p = top_p->value_or(1.0); !(p > 0 && p <= 1)) {
    return FieldError("top_p", absl::StrFormat("top_p must be in (0, 1], got %.10g", p));
  }
  r.sampling.top_p = static_cast<float>(top_p->value_or(1.0));
  absl::StatusOr<std::optional<int64_t>> top_k = Integer(j, "top_k");
  if (!top_k.ok()) return top_k.status();
  // vLLM's "no limit" is -1; ours is 0.
  const int64_t k = top_k->value_or(0);
  if (k < -1) return FieldError("top_k", absl::StrCat("top_k must be >= 0 (or -1: no limit), got ", k));
  r.sampling.top_k = k == -1 ? 0 : static_cast<int>(std::min<int64_t>(k, std::numeric_limits<int>::max()));
  absl::StatusOr<std::optional<int64_t>> seed = Integer(j, "seed");
  if (!seed.ok()) return seed.status();
  // Without a seed OpenAI samples afresh each time; with one, the same request gives the same text.
  r.sampling.seed = seed->has_value() ? static_cast<uint64_t>(**seed)
                                      : (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();

  // Penalties: checked as sent, in double, before rounding to float.
  struct Penalty {
    const char* name;
    float* field;
    double lo, hi;
    bool lo_open;
  };
  for (const Penalty& p :
       {Penalty{"presence_penalty", &r.sampling.presence_penalty, -2, 2, false},
        Penalty{"frequency_penalty", &r.sampling.frequency_penalty, -2, 2, false},
        Penalty{"repetition_penalty", &r.sampling.repetition_penalty, 0, 1e9, true}}) {
    absl::StatusOr<std::optional<double>> v = Number(j, p.name);
    if (!v.ok()) return v.status();
    if (!v->has_value()) continue;
    const double x = **v;
    if (!(p.lo_open ? x > p.lo : x >= p.lo) || !(x <= p.hi)) {
      return FieldError(
          p.name, p.lo_open ? absl::StrFormat("%s must be > 0 (1: none), got %.10g", p.name, x)
                            : absl::StrFormat("%s must be in [-2, 2], got %.10g", p.name, x));
    }
    *p.field = static_cast<float>(x);
  }
  return absl::OkStatus();
}

// What ends a generation: stop strings and token ids, min_tokens, ignore_eos. REQUIRES:
// max_tokens parsed (min_tokens is bounded by it).
absl::Status ParseEnds(const json& j, const char* max_tokens_name, Request* request) {
  Request& r = *request;
  absl::StatusOr<std::vector<std::string>> stop = StopStrings(j);
  if (!stop.ok()) return stop.status();
  r.stop = *std::move(stop);
  if (const json* ids = Field(j, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array())
      return FieldError("stop_token_ids", "stop_token_ids must be a list of token ids");
    absl::StatusOr<std::vector<int32_t>> list = TokenIds(*ids, "stop_token_ids");
    if (!list.ok())
      return FieldError("stop_token_ids",
                        "stop_token_ids must be a list of token ids (integers >= 0)");
    r.stop_token_ids = *std::move(list);
  }
  absl::StatusOr<std::optional<int64_t>> min_tokens = Integer(j, "min_tokens");
  if (!min_tokens.ok()) return min_tokens.status();
  if (min_tokens->has_value()) {
    const int64_t n = **min_tokens;
    if (n < 0 || n > r.max_tokens) {
      return FieldError("min_tokens", absl::StrCat("min_tokens must be in [0, ", max_tokens_name,
                                                   " = ", r.max_tokens, "], got ", n));
    }
    r.min_tokens = static_cast<int>(n);
  }
  absl::StatusOr<bool> ignore_eos = Bool(j, "ignore_eos");
  if (!ignore_eos.ok()) return ignore_eos.status();
  r.ignore_eos = *ignore_eos;
  return absl::OkStatus();
}

// Log-probabilities: chat's logprobs + top_logprobs, completions' logprobs: N and echo.
absl::Status ParseLogprobs(const json& j, bool chat, ParsedRequest* parsed) {
  Request& r = parsed->request;
  if (chat) {
    if (Field(j, "echo") != nullptr)
      return FieldError("echo", "echo is a completions field; chat has none");
    absl::StatusOr<bool> logprobs = Bool(j, "logprobs");
    if (!logprobs.ok()) return logprobs.status();
    absl::StatusOr<std::optional<int64_t>> top = Integer(j, "top_logprobs");
    if (!top.ok()) return top.status();
    if (top->has_value() && !*logprobs) {
      return FieldError("top_logprobs", "top_logprobs needs logprobs: true");
    }
    const int64_t n = top->value_or(0);
    if (n < 0 || n > kMaxTopLogprobs) {
      return FieldError("top_logprobs", absl::StrCat("top_logprobs must be in [0, ",
                                                     kMaxTopLogprobs, "], got ", n));
    }
    r.logprobs = *logprobs ? static_cast<int>(n) : -1;
  } else {
    if (Field(j, "top_logprobs") != nullptr) {
      return FieldError("top_logprobs",
                        "top_logprobs is a chat field; completions take logprobs: N");
    }
    absl::StatusOr<std::optional<int64_t>> logprobs = Integer(j, "logprobs");
    if (!logprobs.ok()) return logprobs.status();
    if (logprobs->has_value()) {
      const int64_t n = **logprobs;
      if (n < 0 || n > kMaxTopLogprobs) {
        return FieldError("logprobs",
                          absl::StrCat("logprobs must be in [0, ", kMaxTopLogprobs, "], got ", n));
      }
      r.logprobs = static_cast<int>(n);
    }
    absl::StatusOr<bool> echo = Bool(j, "echo");
    if (!echo.ok()) return echo.status();
    parsed->echo = *echo;
    r.prompt_logprobs = parsed->echo && r.logprobs >= 0;
  }
  return absl::OkStatus();
}

// label and user, choices per prompt (n), streaming and its options.
absl::Status ParseChoicesAndStream(const json& j, ParsedRequest* parsed) {
  Request& r = parsed->request;
  ParsedRequest& out = *parsed;
  if (const json* label = Field(j, "label"); label != nullptr) {
    if (!label->is_string()) return FieldError("label", "label must be a string");
    r.label = label->get<std::string>();
  }
  if (const json* user = Field(j, "user"); user != nullptr && !user->is_string()) {
    return FieldError("user", "user must be a string");
  }

  absl::StatusOr<std::optional<int64_t>> n = Integer(j, "n");
  if (!n.ok()) return n.status();
  out.n = static_cast<int>(std::clamp<int64_t>(n->value_or(1), 0, kMaxChoicesPerRequest + 1));
  const int64_t prompts = 1 + static_cast<int64_t>(out.more_prompts.size());
  if (out.n < 1 || prompts * out.n > kMaxChoicesPerRequest) {
    return FieldError("n", absl::StrCat("n must be >= 1 with prompts x n <= ",
                                        kMaxChoicesPerRequest, " (", prompts, " prompt",
                                        prompts == 1 ? "" : "s", ", n = ", n->value_or(1), ")"));
  }

  absl::StatusOr<bool> stream = Bool(j, "stream");
  if (!stream.ok()) return stream.status();
  out.stream = *stream;
  if (const json* options = Field(j, "stream_options"); options != nullptr) {
    if (!out.stream) return FieldError("stream_options", "stream_options is only allowed with stream: true");
    if (!options->is_object()) return FieldError("stream_options", "stream_options must be an object");
    absl::StatusOr<bool> usage = Bool(*options, "include_usage");
    if (!usage.ok()) return FieldError("stream_options", "stream_options.include_usage must be true or false");
    out.include_usage = *usage;
  }

  return absl::OkStatus();
}

// Request::Validate on every prompt, its message's field named as the API spells it.
absl::Status ValidateParsed(const ParsedRequest& out, bool chat, const char* max_tokens_name,
                            const ServedModel& model) {
  const Request& r = out.request;
  RequestFieldNames names;
  names.max_tokens = max_tokens_name;
  names.sampling_prefix = "";
  names.stop = "stop";
  names.stop_token_ids = "stop_token_ids";
  names.min_tokens = "min_tokens";
  names.label = "label";
  absl::Status s = r.Validate(*model.config, model.limits, names);
  for (size_t i = 0; i < out.more_prompts.size() && s.ok(); ++i) {
    Request other = r;
    other.prompt = out.more_prompts[i];
    s = other.Validate(*model.config, model.limits, names);
  }
  if (!s.ok()) {
    // Request::Validate's messages start with the field they are about: that is the param.
    const std::string message(s.message());
    for (const char* field : {max_tokens_name, "temperature", "top_k", "top_p", "stop_token_ids",
                              "stop", "min_tokens", "repetition_penalty", "logprobs", "label"}) {
      if (absl::StartsWith(message, field)) return FieldError(field, message);
    }
    if (absl::StartsWith(message, "prompt") || absl::StartsWith(message, "the prompt")) {
      return FieldError(chat ? "messages" : "prompt", message);
    }
    return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, const std::string& body,
                                           const ServedModel& model) {
  if (absl::Status s = ShapeWithin(body); !s.ok()) return s;
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON (UTF-8)");
  if (!j.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  const bool chat = endpoint == Endpoint::kChat;
  MOE_RETURN_IF_ERROR(CheckModelAndUnsupported(j, model));
  ParsedRequest out;
  MOE_RETURN_IF_ERROR(ParsePrompts(j, chat, model, &out));
  MOE_ASSIGN_OR_RETURN(const char* max_tokens_name, ParseMaxTokens(j, chat, model, &out.request));
  MOE_RETURN_IF_ERROR(ParseSampling(j, &out.request));
  MOE_RETURN_IF_ERROR(ParseEnds(j, max_tokens_name, &out.request));
  MOE_RETURN_IF_ERROR(ParseLogprobs(j, chat, &out));
  MOE_RETURN_IF_ERROR(ParseChoicesAndStream(j, &out));
  MOE_RETURN_IF_ERROR(ValidateParsed(out, chat, max_tokens_name, model));
  return out;
}

const char* FinishReasonString(FinishReason reason) {
  return reason == FinishReason::kLength ? "length" : "stop";
}

std::string ResponseId(Endpoint endpoint, uint64_t request_id) {
  return absl::StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", request_id);
}

std::string ResponseId(Endpoint endpoint, const std::string& request_id) {
  return absl::StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", request_id);
}

namespace {

json LogprobValue(float logprob) { return std::isnan(logprob) ? json(nullptr) : json(logprob); }

json Bytes(const std::string& s) {
  json out = json::array();
  for (unsigned char c : s) out.push_back(static_cast<int>(c));
  return out;
}

// Completions' legacy shape: parallel lists; top_logprobs maps token text to log-probability
// (the chosen token's included, as vLLM's); text_offset counts bytes from `offset`.
json CompletionLogprobs(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer,
                        size_t offset) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenLogprob& t : tokens) {
    const std::string text = tokenizer.TokenBytes(t.id);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(LogprobValue(t.logprob));
    if (std::isnan(t.logprob)) {
      out["top_logprobs"].push_back(nullptr);
    } else {
      json top = json::object();
      for (const auto& [id, lp] : t.top) top.emplace(tokenizer.TokenBytes(id), lp);
      top.emplace(text, t.logprob);  // no-op when already there
      out["top_logprobs"].push_back(std::move(top));
    }
    out["text_offset"].push_back(offset);
    offset += text.size();
  }
  return out;
}

// Chat's shape: one object per token, with its bytes and its alternatives.
json ChatLogprobs(const std::vector<TokenLogprob>& tokens, const Tokenizer& tokenizer) {
  json content = json::array();
  for (const TokenLogprob& t : tokens) {
    const std::string text = tokenizer.TokenBytes(t.id);
    json top = json::array();
    for (const auto& [id, lp] : t.top) {
      const std::string alt = tokenizer.TokenBytes(id);
      top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", Bytes(alt)}});
    }
    content.push_back({{"token", text},
                       {"logprob", LogprobValue(t.logprob)},
                       {"bytes", Bytes(text)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json ChoiceJson(Endpoint endpoint, const Choice& c, bool chunk, bool role_chunk,
                const Tokenizer* tokenizer, size_t text_offset) {
  json choice = {
      {"index", c.index}, {"logprobs", nullptr}, {"finish_reason", FinishJson(c.finish)}};
  if (c.logprobs && tokenizer != nullptr) {
    choice["logprobs"] = endpoint == Endpoint::kChat
                             ? ChatLogprobs(c.tokens, *tokenizer)
                             : CompletionLogprobs(c.tokens, *tokenizer, text_offset);
  }
  if (endpoint == Endpoint::kChat) {
    if (chunk) {
      json delta = json::object();
      if (role_chunk) delta["role"] = "assistant";
      if (role_chunk || !c.text.empty()) delta["content"] = c.text;
      choice["delta"] = delta;
    } else {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    }
  } else {
    choice["text"] = c.text;
  }
  return choice;
}

}  // namespace

std::string CompletionBody(Endpoint endpoint, const ResponseHead& head,
                           const std::vector<Choice>& choices, const Usage& usage,
                           const Tokenizer& tokenizer) {
  json out = Head(endpoint, head, /*chunk=*/false);
  out["choices"] = json::array();
  for (const Choice& c : choices) {
    out["choices"].push_back(ChoiceJson(endpoint, c, /*chunk=*/false, false, &tokenizer, 0));
  }
  out["usage"] = UsageJson(usage);
  return Dump(out);
}

std::string CompletionBody(Endpoint endpoint, const ResponseHead& head, const std::string& text,
                           FinishReason finish, const Usage& usage) {
  Choice c;
  c.text = text;
  c.finish = finish;
  json out = Head(endpoint, head, /*chunk=*/false);
  out["choices"] = json::array({ChoiceJson(endpoint, c, /*chunk=*/false, false, nullptr, 0)});
  out["usage"] = UsageJson(usage);
  return Dump(out);
}

std::string StreamChunk(Endpoint endpoint, const ResponseHead& head, const Choice& choice,
                        bool role_chunk, const Tokenizer& tokenizer) {
  json out = Head(endpoint, head, /*chunk=*/true);
  out["choices"] = json::array(
      {ChoiceJson(endpoint, choice, /*chunk=*/true, role_chunk, &tokenizer, choice.text_offset)});
  return Dump(out);
}

std::string StreamChunk(Endpoint endpoint, const ResponseHead& head, const std::string& text, FinishReason finish,
                        bool role_chunk) {
  Choice c;
  c.text = text;
  c.finish = finish;
  json out = Head(endpoint, head, /*chunk=*/true);
  out["choices"] = json::array({ChoiceJson(endpoint, c, /*chunk=*/true, role_chunk, nullptr, 0)});
  return Dump(out);
}

namespace {

absl::StatusOr<json> ParseBody(const std::string& body, const ServedModel& model) {
  if (absl::Status s = ShapeWithin(body); !s.ok()) return s;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON (UTF-8)");
  if (!j.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  if (const json* name = Field(j, "model");
      name != nullptr && (!name->is_string() || *name != model.id)) {
    absl::Status s = absl::NotFoundError(
        absl::StrCat("the model does not exist; this server serves `", model.id, "`"));
    s.SetPayload(kParamPayload, absl::Cord("model"));
    return s;
  }
  return j;
}

}  // namespace

absl::StatusOr<std::string> TokenizeResponse(const std::string& body, const ServedModel& model) {
  absl::StatusOr<json> j = ParseBody(body, model);
  if (!j.ok()) return j.status();
  std::vector<int32_t> ids;
  if (Field(*j, "messages") != nullptr) {
    absl::StatusOr<std::vector<int32_t>> chat = ChatIds(*j, model);
    if (!chat.ok()) return chat.status();
    ids = *std::move(chat);
  } else {
    const json* prompt = Field(*j, "prompt");
    if (prompt == nullptr || !prompt->is_string())
      return FieldError("prompt", "prompt must be a string");
    const std::string& text = prompt->get_ref<const std::string&>();
    if (absl::Status s = TextWithin(text, 0, model.max_prompt_bytes, "prompt"); !s.ok()) return s;
    const json* special = Field(*j, "add_special_tokens");
    if (special != nullptr && !special->is_boolean()) {
      return FieldError("add_special_tokens", "add_special_tokens must be true or false");
    }
    const bool bos = special == nullptr || special->get<bool>();
    if (!text.empty() || bos) {
      for (int id : model.tokenizer->Encode(text, bos)) ids.push_back(id);
    }
  }
  absl::StatusOr<bool> strs = Bool(*j, "return_token_strs");
  if (!strs.ok()) return strs.status();
  json out = {{"tokens", ids},
              {"count", ids.size()},
              {"max_model_len", model.config->max_position_embeddings}};
  if (*strs) {
    json pieces = json::array();
    for (int32_t id : ids) pieces.push_back(model.tokenizer->TokenBytes(id));
    out["token_strs"] = std::move(pieces);
  }
  return Dump(out);
}

absl::StatusOr<std::string> DetokenizeResponse(const std::string& body, const ServedModel& model) {
  absl::StatusOr<json> j = ParseBody(body, model);
  if (!j.ok()) return j.status();
  const json* tokens = Field(*j, "tokens");
  if (tokens == nullptr || !tokens->is_array())
    return FieldError("tokens", "tokens must be a list of token ids");
  absl::StatusOr<std::vector<int32_t>> ids = TokenIds(*tokens, "tokens");
  if (!ids.ok()) return FieldError("tokens", "tokens must be a list of token ids (integers >= 0)");
  if (absl::Status s = model.config->CheckTokenIds(*ids); !s.ok()) {
    return FieldError("tokens", absl::StrCat("tokens ", s.message()));
  }
  return Dump({{"prompt", model.tokenizer->Decode(std::vector<int>(ids->begin(), ids->end()))}});
}

std::string ClientRequestId(const std::string& header) {
  if (header.empty() || header.size() > 128) return "";
  for (char c : header) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return "";
    }
  }
  return header;
}

std::string UsageChunk(Endpoint endpoint, const ResponseHead& head, const Usage& usage) {
  json out = Head(endpoint, head, /*chunk=*/true);
  out["choices"] = json::array();
  out["usage"] = UsageJson(usage);
  return Dump(out);
}

std::string ModelObject(const ServedModel& model) {
  const json m = {{"id", model.id},
                  {"object", "model"},
                  {"created", model.created},
                  {"owned_by", "moe-cluster"},
                  {"max_model_len", model.config->max_position_embeddings}};
  return Dump(m);
}

std::string ModelList(const ServedModel& model) {
  const json list = {{"object", "list"}, {"data", json::array({json::parse(ModelObject(model))})}};
  return Dump(list);
}

}  // namespace moe::openai
