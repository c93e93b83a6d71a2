#include "coordinator/server/openai_server.h"

#include <algorithm>
#include <ctime>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "coordinator/server/server_security.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using openai::Endpoint;

// Bodies are small and the coordinator's cores belong to the model: nothing is compressed (and an
// event stream never is: a compressor would hold tokens back).
constexpr char kJson[] = "application/json; charset=utf-8";
// How often a waiting handler looks whether its client has gone (a token wakes it at once).
constexpr absl::Duration kClientCheck = absl::Milliseconds(100);

HttpResponse Json(int status, std::string body) {
  return HttpResponse{status, kJson, std::move(body), {}};
}
HttpResponse Error(const openai::ApiError& e) { return Json(e.http_status, e.Body()); }

std::string Event(const std::string& data) { return absl::StrCat("data: ", data, "\n\n"); }

}  // namespace

absl::Status OpenAiServerOptions::Validate() const {
  if (max_threads < 2) return absl::InvalidArgumentError("--http-max-threads must be >= 2");
  if (max_connections < 2) return absl::InvalidArgumentError("--http-max-connections must be >= 2");
  if (max_connections_per_client < 1) {
    return absl::InvalidArgumentError("--http-max-connections-per-client must be >= 1");
  }
  if (!(request_timeout_seconds >= 1) || request_timeout_seconds > 3600) {
    return absl::InvalidArgumentError("--http-request-timeout-s must be in [1, 3600]");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(
    const OpenAiServerOptions& options, openai::ServedModel model, Scheduler* scheduler,
    RequestMetrics* metrics, HealthCheck health, PrometheusPage prometheus) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<OpenAiServer> server(
      new OpenAiServer(std::move(model), scheduler, metrics, std::move(health), options.api_key));
  OpenAiServer* self = server.get();

  HttpServerOptions http;
  http.listen = options.listen;
  http.flag = "--http-listen";
  http.max_connections = options.max_connections;
  http.max_connections_per_client = options.max_connections_per_client;
  http.handler_threads = options.max_threads;
  // Prompts may be JSON-escaped up to 6 bytes per byte (\u00XX); their limit is checked after
  // parsing.
  http.max_body_bytes = static_cast<uint64_t>(self->model_.max_prompt_bytes) * 6 + (64 << 10);
  http.request_timeout = absl::Seconds(options.request_timeout_seconds);
  http.head_timeout = std::min(absl::Seconds(10), http.request_timeout);
  http.tls_cert_file = options.tls_cert_file;
  http.tls_key_file = options.tls_key_file;
  http.tls_client_ca_file = options.tls_client_ca_file;
  http.check_head = [self](const HttpRequest& head) { return self->Unauthorized(head); };
  // What the server answers by itself (no such route, a body over the limit) in OpenAI's shape too.
  http.error_body = [](int status, const std::string& message) {
    return openai::ApiError{status, status >= 500 ? "server_error" : "invalid_request_error",
                            message, "", ""}
        .Body();
  };
  http.error_content_type = kJson;

  std::vector<HttpRoute> routes;
  for (const auto& [path, endpoint] : {std::pair{"/v1/completions", Endpoint::kCompletions},
                                       std::pair{"/v1/chat/completions", Endpoint::kChat}}) {
    routes.push_back({"POST", path, /*blocks=*/true, /*has_body=*/true,
                      [self, endpoint = endpoint](const HttpRequest& req, HttpExchange& ex) {
                        self->Generate(endpoint, req, ex);
                      }});
  }
  routes.push_back(
      {"GET", "/v1/models", false, false, [self](const HttpRequest&, HttpExchange& ex) {
         ex.Respond(Json(200, openai::ModelList(self->model_)));
       }});
  routes.push_back(
      {"GET", "/v1/models/", false, false, [self](const HttpRequest& req, HttpExchange& ex) {
         const std::string name = req.path.substr(std::string("/v1/models/").size());
         if (name != self->model_.id) {
           return ex.Respond(
               Error({404, "not_found_error", absl::StrCat("the model `", name, "` does not exist"),
                      "model", "model_not_found"}));
         }
         ex.Respond(Json(200, openai::ModelObject(self->model_)));
       }});
  // vLLM's tokenizer endpoints (tools that have no tokenizer of their own ask these) and version.
  for (const auto& [path, respond] : {std::pair{"/tokenize", &openai::TokenizeResponse},
                                      std::pair{"/detokenize", &openai::DetokenizeResponse}}) {
    routes.push_back({"POST", path, /*blocks=*/true, /*has_body=*/true,
                      [self, respond = respond](const HttpRequest& req, HttpExchange& ex) {
                        absl::StatusOr<std::string> body = respond(req.body, self->model_);
                        if (!body.ok())
                          return ex.Respond(Error(openai::ErrorFromStatus(body.status())));
                        ex.Respond(Json(200, *std::move(body)));
                      }});
  }
  // The Prometheus page where scrapers and benchmark tools look first (the --metrics-listen port
  // serves the same page). On the I/O thread, like /health, and open like it.
  if (prometheus) {
    routes.push_back(
        {"GET", "/metrics", false, false, [prometheus](const HttpRequest&, HttpExchange& ex) {
           HttpResponse r;
           r.content_type = "text/plain; version=0.0.4; charset=utf-8";
           r.body = prometheus();
           ex.Respond(std::move(r));
         }});
  }
  routes.push_back({"GET", "/version", false, false, [](const HttpRequest&, HttpExchange& ex) {
                      ex.Respond(Json(200, nlohmann::json{{"version", MOE_VERSION}}.dump()));
                    }});
  // Unauthenticated, for load balancers and orchestrators: 200 while the cluster can serve. On the
  // I/O thread: it answers however busy the generation threads are.
  routes.push_back({"GET", "/health", false, false, [self](const HttpRequest&, HttpExchange& ex) {
                      const absl::Status s = self->health_ ? self->health_() : absl::OkStatus();
                      nlohmann::json body = {{"status", s.ok() ? "ok" : "unavailable"}};
                      if (!s.ok()) body["reason"] = std::string(s.message());
                      ex.Respond(Json(s.ok() ? 200 : 503, body.dump()));
                    }});

  absl::StatusOr<std::unique_ptr<HttpServer>> started =
      HttpServer::Start(std::move(http), std::move(routes));
  if (!started.ok()) return started.status();
  server->http_ = *std::move(started);
  return server;
}

std::optional<HttpResponse> OpenAiServer::Unauthorized(const HttpRequest& req) const {
  // Probes, scrapers and the version need no key (as vLLM's).
  if (api_key_.empty() || req.path == "/health" || req.path == "/metrics" ||
      req.path == "/version") {
    return std::nullopt;
  }
  const std::string header = req.Header("Authorization");
  const absl::string_view presented = BearerCredentials(header);
  if (!presented.empty() && ConstantTimeEquals(api_key_, presented)) return std::nullopt;
  RecordFailed(absl::StatusCode::kUnauthenticated);
  return Error({401, "invalid_request_error",
                header.empty() ? "this server needs an API key: send \"Authorization: Bearer KEY\""
                               : "incorrect API key provided",
                "", "invalid_api_key"});
}

void OpenAiServer::Fail(HttpExchange& ex, const absl::Status& status) const {
  RecordFailed(status.code());
  ex.Respond(Error(openai::ErrorFromStatus(status)));
}

void OpenAiServer::RecordFinished(const StreamEvent& last) const {
  if (metrics_ == nullptr) return;
  metrics_->RecordFinished(FinishReasonName(last.finish), last.prompt_tokens, last.generated_tokens,
                           last.time_to_first_token_ms / 1e3, last.total_ms / 1e3,
                           last.queue_ms / 1e3);
}

void OpenAiServer::RecordFailed(absl::StatusCode code) const {
  if (metrics_ != nullptr) metrics_->RecordFailed(absl::StatusCodeToString(code));
}

namespace {

// The gap since the sequence's previous token, for the inter-token histogram.
void RecordGap(RequestMetrics* metrics, const StreamEvent& e, absl::Time* previous) {
  if (metrics != nullptr && *previous != absl::InfinitePast()) {
    metrics->RecordInterToken(absl::ToDoubleSeconds(e.sampled_at - *previous));
  }
  *previous = e.sampled_at;
}

// A sequence's events into its choice: text, and log-probabilities when asked (the prompt's, which
// come with the first event, before the generated tokens').
void AddToChoice(const StreamEvent& e, openai::Choice* choice) {
  choice->text += e.text;
  if (!choice->logprobs) return;
  choice->tokens.insert(choice->tokens.end(), e.prompt_logprobs.begin(), e.prompt_logprobs.end());
  choice->tokens.insert(choice->tokens.end(), e.logprobs.begin(), e.logprobs.end());
}

}  // namespace

void OpenAiServer::Generate(Endpoint endpoint, const HttpRequest& req, HttpExchange& ex) {
  absl::StatusOr<openai::ParsedRequest> parsed = openai::ParseRequest(endpoint, req.body, model_);
  if (!parsed.ok()) return Fail(ex, parsed.status());
  // Each choice is a sequence of its own: n per prompt, the j-th sampling with seed + j (the same
  // seed would give n copies of one text); submitted together, they run in the same batches.
  std::vector<Request> requests;
  std::vector<bool> counts_prompt;  // OpenAI's usage counts a prompt once, however many choices
  for (size_t p = 0; p <= parsed->more_prompts.size(); ++p) {
    for (int j = 0; j < parsed->n; ++j) {
      Request r = parsed->request;
      if (p > 0) r.prompt = parsed->more_prompts[p - 1];
      r.sampling.seed += static_cast<uint64_t>(j);
      requests.push_back(std::move(r));
      counts_prompt.push_back(j == 0);
    }
  }
  std::vector<openai::Choice> choices(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    openai::Choice& c = choices[i];
    c.index = static_cast<int>(i);
    c.logprobs = requests[i].logprobs >= 0;
    if (!parsed->echo) continue;
    const std::vector<int32_t>& prompt = requests[i].prompt;
    c.text = model_.tokenizer->Decode(std::vector<int>(prompt.begin(), prompt.end()));
    if (requests[i].prompt_logprobs) {
      TokenLogprob first;  // nothing before it to predict it
      first.id = prompt.front();
      first.logprob = std::numeric_limits<float>::quiet_NaN();
      c.tokens.push_back(std::move(first));
    }
  }
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (Request& r : requests) {
    absl::StatusOr<std::shared_ptr<RequestHandle>> handle = scheduler_->Submit(std::move(r));
    if (!handle.ok()) {
      for (auto& h : handles) h->Cancel();
      return Fail(ex, handle.status());
    }
    handles.push_back(*std::move(handle));
  }
  // A client's X-Request-Id names the response (and comes back in the header); else our number.
  const std::string client_id = openai::ClientRequestId(req.Header("X-Request-Id"));
  const std::string request_id =
      client_id.empty() ? absl::StrCat(handles.front()->id()) : client_id;
  const openai::ResponseHead head{openai::ResponseId(endpoint, request_id),
                                  static_cast<int64_t>(std::time(nullptr)), model_.id};
  if (parsed->stream) {
    return Stream(endpoint, head, request_id, handles, std::move(choices), counts_prompt,
                  parsed->include_usage, ex);
  }

  openai::Usage usage;
  // Each sequence's last token, for the inter-token gaps.
  std::vector<absl::Time> previous(handles.size(), absl::InfinitePast());
  // One sequence after the other: the others' events wait in their handles meanwhile.
  for (size_t i = 0; i < handles.size(); ++i) {
    for (bool finished = false; !finished;) {
      std::vector<StreamEvent> events = handles[i]->Wait(kClientCheck);
      for (StreamEvent& e : events) {
        if (!e.error.ok()) {
          for (auto& h : handles) h->Cancel();
          return Fail(ex, e.error);
        }
        RecordGap(metrics_, e, &previous[i]);
        AddToChoice(e, &choices[i]);
        if (e.finish == FinishReason::kNone) continue;
        RecordFinished(e);
        choices[i].finish = e.finish;
        if (counts_prompt[i]) usage.prompt_tokens += e.prompt_tokens;
        usage.completion_tokens += e.generated_tokens;
        finished = true;
      }
      // One poll(2) per step or per kClientCheck: cheap. Nobody will read the answer: free the
      // KV cache now. 499 is nginx's "client closed request", never seen by the client.
      if (!finished && ex.ClientGone()) {
        for (auto& h : handles) h->Cancel();
        RecordFailed(absl::StatusCode::kCancelled);
        return ex.Respond(Json(499, ""));
      }
    }
  }
  HttpResponse r =
      Json(200, openai::CompletionBody(endpoint, head, choices, usage, *model_.tokenizer));
  r.headers.emplace_back("X-Request-Id", request_id);
  return ex.Respond(std::move(r));
}

void OpenAiServer::Stream(Endpoint endpoint, const openai::ResponseHead& head,
                          const std::string& request_id,
                          const std::vector<std::shared_ptr<RequestHandle>>& handles,
                          std::vector<openai::Choice> choices,
                          const std::vector<bool>& counts_prompt, bool include_usage,
                          HttpExchange& ex) {
  // Whatever ends the response early (the client gone or too slow, the server stopping) stops
  // the generation too.
  auto gone = [&] {
    for (auto& h : handles) h->Cancel();
    RecordFailed(absl::StatusCode::kCancelled);
  };
  auto write = [&ex](const std::string& data) { return ex.Write(Event(data)); };
  if (!ex.StartStream(200, "text/event-stream",
                      {{"Cache-Control", "no-cache"}, {"X-Request-Id", request_id}})) {
    return gone();
  }
  const Tokenizer& tokenizer = *model_.tokenizer;
  std::vector<size_t> offsets(choices.size(), 0);  // bytes of each choice's tokens sent so far
  auto send = [&](size_t i, openai::Choice piece, bool role_chunk) {
    piece.text_offset = offsets[i];
    for (const TokenLogprob& t : piece.tokens) offsets[i] += tokenizer.TokenBytes(t.id).size();
    return write(openai::StreamChunk(endpoint, head, piece, role_chunk, tokenizer));
  };
  // OpenAI's first chat chunk names the role, before any token; an echoed prompt comes first.
  for (size_t i = 0; i < choices.size(); ++i) {
    openai::Choice first = choices[i];
    first.logprobs = false;  // the prompt's log-probabilities come with its first event
    first.tokens.clear();
    if (endpoint == Endpoint::kChat || !first.text.empty()) {
      if (!send(i, first, /*role_chunk=*/endpoint == Endpoint::kChat)) return gone();
    }
  }
  openai::Usage usage;
  // Each sequence's last token, for the inter-token gaps.
  std::vector<absl::Time> previous(handles.size(), absl::InfinitePast());
  std::vector<bool> finished(handles.size(), false);
  size_t left = handles.size();
  // One sequence waits for its next step; several are polled in turn, briefly each.
  const absl::Duration wait = handles.size() == 1 ? kClientCheck : absl::Milliseconds(2);
  while (left > 0) {
    for (size_t i = 0; i < handles.size(); ++i) {
      if (finished[i]) continue;
      std::vector<StreamEvent> events = handles[i]->Wait(wait);
      if (ex.ClientGone()) return gone();  // one poll(2): cheap beside a step
      for (StreamEvent& e : events) {
        if (!e.error.ok()) {
          // Headers are out with 200: the error travels as an event, as OpenAI's streams carry
          // them.
          for (auto& h : handles) h->Cancel();
          RecordFailed(e.error.code());
          write(openai::ErrorFromStatus(e.error).Body());
          return ex.EndStream();
        }
        openai::Choice piece;
        piece.index = choices[i].index;
        piece.logprobs = choices[i].logprobs;
        if (piece.logprobs && !choices[i].tokens.empty()) {  // the echoed prompt's first token
          piece.tokens = std::move(choices[i].tokens);
          choices[i].tokens.clear();
        }
        RecordGap(metrics_, e, &previous[i]);
        AddToChoice(e, &piece);
        if ((!piece.text.empty() || !piece.tokens.empty()) && !send(i, std::move(piece), false))
          return gone();
        if (e.finish == FinishReason::kNone) continue;
        RecordFinished(e);
        if (counts_prompt[i]) usage.prompt_tokens += e.prompt_tokens;
        usage.completion_tokens += e.generated_tokens;
        openai::Choice last;
        last.index = choices[i].index;
        last.finish = e.finish;
        if (!send(i, std::move(last), false)) return gone();
        finished[i] = true;
        --left;
      }
    }
  }
  if (!include_usage || write(openai::UsageChunk(endpoint, head, usage)))
    ex.Write("data: [DONE]\n\n");
  return ex.EndStream();
}

}  // namespace moe
