#include "coordinator/server/openai_server.h"

#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "coordinator/server/client_connection.h"
#include "coordinator/server/server_security.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using openai::Endpoint;

// With the charset, httplib leaves JSON uncompressed even for clients that accept brotli or gzip:
// bodies are small, and the coordinator's cores belong to the model. (Event streams are never
// compressed: a compressor would hold tokens back.)
constexpr char kJson[] = "application/json; charset=utf-8";
// How often a waiting handler looks whether its client has gone (a token wakes it at once).
constexpr absl::Duration kClientCheck = absl::Milliseconds(100);

void WriteError(httplib::Response& res, const openai::ApiError& e) {
  res.status = e.http_status;
  res.set_content(e.Body(), kJson);
}

std::string Event(const std::string& data) { return absl::StrCat("data: ", data, "\n\n"); }

}  // namespace

absl::Status OpenAiServerOptions::Validate() const {
  if (max_threads < 2) return absl::InvalidArgumentError("--http-max-threads must be >= 2");
  return absl::OkStatus();
}

// One streamed response: pumped by httplib's content provider until the last event is written.
struct OpenAiServer::Stream {
  const OpenAiServer* server;
  Endpoint endpoint;
  openai::ResponseHead head;
  std::shared_ptr<RequestHandle> handle;
  bool include_usage;
  ClientConnection client;
  bool role_sent = false;
  bool ended = false;  // the last event is written (or the client is gone)

  // Writes whatever arrived; false aborts the response (the client is gone).
  bool Pump(httplib::DataSink& sink) {
    auto write = [&sink](const std::string& s) { return sink.write(s.data(), s.size()); };
    if (endpoint == Endpoint::kChat && !role_sent) {
      role_sent = true;  // OpenAI's first chat chunk names the role, before any token
      return write(Event(openai::StreamChunk(endpoint, head, "", FinishReason::kNone, /*role_chunk=*/true))) ||
             Gone();
    }
    std::vector<StreamEvent> events = handle->Wait(kClientCheck);
    if (client.Closed()) return Gone();  // one poll(2): cheap beside a step
    for (StreamEvent& e : events) {
      if (!e.error.ok()) {
        // Headers are out with 200: the error travels as an event, as OpenAI's streams carry them.
        ended = true;
        server->RecordFailed(e.error.code());
        write(Event(openai::ErrorFromStatus(e.error).Body()));
        sink.done();
        return true;
      }
      if (!e.text.empty() && !write(Event(openai::StreamChunk(endpoint, head, e.text, FinishReason::kNone)))) {
        return Gone();
      }
      if (e.finish == FinishReason::kNone) continue;
      ended = true;
      server->RecordFinished(e);
      const openai::Usage usage{e.prompt_tokens, e.generated_tokens};
      bool ok = write(Event(openai::StreamChunk(endpoint, head, "", e.finish)));
      if (ok && include_usage) ok = write(Event(openai::UsageChunk(endpoint, head, usage)));
      if (ok) ok = write("data: [DONE]\n\n");
      sink.done();
      return ok;
    }
    return true;
  }

  bool Gone() {
    if (!ended) {
      ended = true;
      handle->Cancel();
      server->RecordFailed(absl::StatusCode::kCancelled);
    }
    return false;
  }
};

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(const OpenAiServerOptions& options,
                                                                   openai::ServedModel model, Scheduler* scheduler,
                                                                   RequestMetrics* metrics, HealthCheck health) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<OpenAiServer> server(
      new OpenAiServer(std::move(model), scheduler, metrics, std::move(health), options.api_key));
  std::unique_ptr<httplib::Server> http;
  if (!options.tls_cert_file.empty()) {
    auto https = std::make_unique<httplib::SSLServer>(
        options.tls_cert_file.c_str(), options.tls_key_file.c_str(),
        options.tls_client_ca_file.empty() ? nullptr : options.tls_client_ca_file.c_str());
    if (!https->is_valid()) {
      return absl::InvalidArgumentError("--http-listen: cannot serve HTTPS with --tls-cert and --tls-key");
    }
    http = std::move(https);
    server->https_ = true;
  } else {
    http = std::make_unique<httplib::Server>();
  }
  const size_t threads = static_cast<size_t>(options.max_threads);
  http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Prompts may be JSON-escaped up to 6 bytes per byte (\u00XX); their limit is checked after parsing.
  http->set_payload_max_length(static_cast<size_t>(server->model_.max_prompt_bytes) * 6 + (64 << 10));
  http->set_read_timeout(30, 0);
  http->set_write_timeout(30, 0);  // a client that stops reading a stream is given up after this
  http->set_keep_alive_max_count(1000);
  // An idle kept-alive connection holds a pool thread, and shutdown waits for it to time out.
  http->set_keep_alive_timeout(2);

  OpenAiServer* self = server.get();
  http->Post("/v1/completions", [self](const httplib::Request& req, httplib::Response& res) {
    self->Generate(Endpoint::kCompletions, req, res);
  });
  http->Post("/v1/chat/completions", [self](const httplib::Request& req, httplib::Response& res) {
    self->Generate(Endpoint::kChat, req, res);
  });
  http->Get("/v1/models", [self](const httplib::Request& req, httplib::Response& res) {
    if (self->Authorized(req, res)) res.set_content(openai::ModelList(self->model_), kJson);
  });
  http->Get(R"(/v1/models/(.+))", [self](const httplib::Request& req, httplib::Response& res) {
    if (!self->Authorized(req, res)) return;
    if (req.matches[1] != self->model_.id) {
      return WriteError(res, {404, "not_found_error",
                              absl::StrCat("the model `", req.matches[1].str(), "` does not exist"), "model",
                              "model_not_found"});
    }
    res.set_content(openai::ModelObject(self->model_), kJson);
  });
  // Unauthenticated, for load balancers and orchestrators: 200 while the cluster can serve.
  http->Get("/health", [self](const httplib::Request&, httplib::Response& res) {
    const absl::Status s = self->health_ ? self->health_() : absl::OkStatus();
    nlohmann::json body = {{"status", s.ok() ? "ok" : "unavailable"}};
    if (!s.ok()) body["reason"] = std::string(s.message());
    res.status = s.ok() ? 200 : 503;
    res.set_content(body.dump(), kJson);
  });
  // Whatever httplib answers by itself (no such route, a body over the limit) in OpenAI's shape too.
  http->set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                   httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = res.status == 404   ? absl::StrCat("no such endpoint: ", req.method, " ", req.path)
                          : res.status == 413 ? "the request body is too large"
                                              : absl::StrCat("HTTP ", res.status);
    WriteError(res, {res.status, res.status >= 500 ? "server_error" : "invalid_request_error", message, "", ""});
    return httplib::Server::HandlerResponse::Handled;
  }));
  http->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    WriteError(res, {500, "server_error", "internal error", "", ""});
  });

  absl::StatusOr<std::unique_ptr<HttpListener>> listener =
      HttpListener::Start(std::move(http), options.listen, "--http-listen");
  if (!listener.ok()) return listener.status();
  server->listener_ = *std::move(listener);
  return server;
}

bool OpenAiServer::Authorized(const httplib::Request& req, httplib::Response& res) const {
  if (api_key_.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  const absl::string_view presented = BearerCredentials(header);
  if (!presented.empty() && ConstantTimeEquals(api_key_, presented)) return true;
  WriteError(res, {401, "invalid_request_error",
                   header.empty() ? "this server needs an API key: send \"Authorization: Bearer KEY\""
                                  : "incorrect API key provided",
                   "", "invalid_api_key"});
  RecordFailed(absl::StatusCode::kUnauthenticated);
  return false;
}

void OpenAiServer::Fail(httplib::Response& res, const absl::Status& status) const {
  RecordFailed(status.code());
  WriteError(res, openai::ErrorFromStatus(status));
}

void OpenAiServer::RecordFinished(const StreamEvent& last) const {
  if (metrics_ == nullptr) return;
  metrics_->RecordFinished(FinishReasonName(last.finish), last.prompt_tokens, last.generated_tokens,
                           last.time_to_first_token_ms / 1e3, last.total_ms / 1e3);
}

void OpenAiServer::RecordFailed(absl::StatusCode code) const {
  if (metrics_ != nullptr) metrics_->RecordFailed(absl::StatusCodeToString(code));
}

void OpenAiServer::Generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  absl::StatusOr<openai::ParsedRequest> parsed = openai::ParseRequest(endpoint, req.body, model_);
  if (!parsed.ok()) return Fail(res, parsed.status());
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle = scheduler_->Submit(std::move(parsed->request));
  if (!handle.ok()) return Fail(res, handle.status());
  const openai::ResponseHead head{openai::ResponseId(endpoint, (*handle)->id()),
                                  static_cast<int64_t>(std::time(nullptr)), model_.id};
  res.set_header("X-Request-Id", absl::StrCat((*handle)->id()));
  ClientConnection client = ClientConnection::Find(req.local_addr, req.local_port, req.remote_addr, req.remote_port);

  if (parsed->stream) {
    auto stream = std::make_shared<Stream>(Stream{this, endpoint, head, *handle, parsed->include_usage, client});
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [stream](size_t, httplib::DataSink& sink) { return stream->Pump(sink); },
        // Whatever ended the response early (a failed write, the server stopping): the
        // generation stops too.
        [stream](bool) {
          if (!stream->ended) stream->Gone();
        });
    return;
  }
  std::string text;
  for (;;) {
    std::vector<StreamEvent> events = (*handle)->Wait(kClientCheck);
    for (StreamEvent& e : events) {
      if (!e.error.ok()) return Fail(res, e.error);
      text += e.text;
      if (e.finish == FinishReason::kNone) continue;
      RecordFinished(e);
      res.set_content(openai::CompletionBody(endpoint, head, text, e.finish, {e.prompt_tokens, e.generated_tokens}),
                      kJson);
      return;
    }
    if (client.Closed()) {  // one poll(2) per step or per kClientCheck: cheap beside a step
      (*handle)->Cancel();  // nobody will read the answer: free the batch slot and the KV cache now
      RecordFailed(absl::StatusCode::kCancelled);
      res.status = 499;  // nginx's "client closed request"; never seen by the client
      return;
    }
  }
}

}  // namespace moe
