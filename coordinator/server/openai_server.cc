#include "coordinator/server/openai_server.h"

#include <algorithm>
#include <ctime>

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

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(const OpenAiServerOptions& options,
                                                                   openai::ServedModel model, Scheduler* scheduler,
                                                                   RequestMetrics* metrics, HealthCheck health) {
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
  if (api_key_.empty() || req.path == "/health") return std::nullopt;
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
                           last.time_to_first_token_ms / 1e3, last.total_ms / 1e3);
}

void OpenAiServer::RecordFailed(absl::StatusCode code) const {
  if (metrics_ != nullptr) metrics_->RecordFailed(absl::StatusCodeToString(code));
}

void OpenAiServer::Generate(Endpoint endpoint, const HttpRequest& req, HttpExchange& ex) {
  absl::StatusOr<openai::ParsedRequest> parsed = openai::ParseRequest(endpoint, req.body, model_);
  if (!parsed.ok()) return Fail(ex, parsed.status());
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle = scheduler_->Submit(std::move(parsed->request));
  if (!handle.ok()) return Fail(ex, handle.status());
  const openai::ResponseHead head{openai::ResponseId(endpoint, (*handle)->id()),
                                  static_cast<int64_t>(std::time(nullptr)), model_.id};
  if (parsed->stream) return Stream(endpoint, head, **handle, parsed->include_usage, ex);

  std::string text;
  for (;;) {
    std::vector<StreamEvent> events = (*handle)->Wait(kClientCheck);
    for (StreamEvent& e : events) {
      if (!e.error.ok()) return Fail(ex, e.error);
      text += e.text;
      if (e.finish == FinishReason::kNone) continue;
      RecordFinished(e);
      HttpResponse r = Json(200, openai::CompletionBody(endpoint, head, text, e.finish,
                                                        {e.prompt_tokens, e.generated_tokens}));
      r.headers.emplace_back("X-Request-Id", absl::StrCat((*handle)->id()));
      return ex.Respond(std::move(r));
    }
    if (ex.ClientGone()) {  // one poll(2) per step or per kClientCheck: cheap beside a step
      (*handle)->Cancel();  // nobody will read the answer: free the batch slot and the KV cache now
      RecordFailed(absl::StatusCode::kCancelled);
      return ex.Respond(
          Json(499, ""));  // nginx's "client closed request"; never seen by the client
    }
  }
}

void OpenAiServer::Stream(Endpoint endpoint, const openai::ResponseHead& head,
                          RequestHandle& handle, bool include_usage, HttpExchange& ex) {
  // Whatever ends the response early (the client gone or too slow, the server stopping) stops
  // the generation too.
  auto gone = [&] {
    handle.Cancel();
    RecordFailed(absl::StatusCode::kCancelled);
  };
  auto write = [&ex](const std::string& data) { return ex.Write(Event(data)); };
  if (!ex.StartStream(
          200, "text/event-stream",
          {{"Cache-Control", "no-cache"}, {"X-Request-Id", absl::StrCat(handle.id())}})) {
    return gone();
  }
  // OpenAI's first chat chunk names the role, before any token.
  if (endpoint == Endpoint::kChat &&
      !write(openai::StreamChunk(endpoint, head, "", FinishReason::kNone, /*role_chunk=*/true))) {
    return gone();
  }
  for (;;) {
    std::vector<StreamEvent> events = handle.Wait(kClientCheck);
    if (ex.ClientGone()) return gone();  // one poll(2): cheap beside a step
    for (StreamEvent& e : events) {
      if (!e.error.ok()) {
        // Headers are out with 200: the error travels as an event, as OpenAI's streams carry them.
        RecordFailed(e.error.code());
        write(openai::ErrorFromStatus(e.error).Body());
        return ex.EndStream();
      }
      if (!e.text.empty() &&
          !write(openai::StreamChunk(endpoint, head, e.text, FinishReason::kNone))) {
        return gone();
      }
      if (e.finish == FinishReason::kNone) continue;
      RecordFinished(e);
      const openai::Usage usage{e.prompt_tokens, e.generated_tokens};
      if (write(openai::StreamChunk(endpoint, head, "", e.finish)) &&
          (!include_usage || write(openai::UsageChunk(endpoint, head, usage)))) {
        ex.Write("data: [DONE]\n\n");
      }
      return ex.EndStream();
    }
  }
}

}  // namespace moe
