// OpenAiServer: the OpenAI-compatible HTTP API (--http-listen) in front of the same scheduler as
// the gRPC port: POST /v1/completions and /v1/chat/completions (whole or streamed as server-sent
// events), GET /v1/models, GET /health. Same limits, same queue, same cancellation: a client that
// disconnects has its request cancelled and its KV cache freed within a step or 100 ms.
//
// Thread-safety: generations run on the HTTP server's handler pool (at most max_threads at once),
// the rest on its I/O thread; all touch only the scheduler's thread-safe side (Submit, handles).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/http/http_server.h"
#include "coordinator/inference/scheduler.h"
#include "coordinator/server/openai_protocol.h"
#include "coordinator/telemetry/request_metrics.h"

namespace moe {

struct OpenAiServerOptions {
  std::string listen;           // --http-listen HOST:PORT (port 0 picks a free one)
  std::string api_key;          // --http-api-key-file's first line; "": no key asked
  int max_threads = 128;        // --http-max-threads: generations served at once (more wait)
  int max_connections = 1024;   // --http-max-connections: open at once (more are closed at accept)
  int max_connections_per_client = 128;  // --http-max-connections-per-client: from one address
  double request_timeout_seconds = 30;   // --http-request-timeout-s: head and body in by then
  // HTTPS with the gRPC port's certificate when set (--tls-cert, --tls-key, --tls-client-ca files).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;

  absl::Status Validate() const;  // names the flag
};

class OpenAiServer {
 public:
  // OK while the cluster can serve; else why not (a lost worker, shutting down): /health's answer.
  using HealthCheck = std::function<absl::Status()>;
  // The Prometheus text /metrics serves (none: no /metrics route).
  using PrometheusPage = std::function<std::string()>;

  // Nothing is owned; the scheduler and metrics (may be null) must outlive the server.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(
      const OpenAiServerOptions& options, openai::ServedModel model, Scheduler* scheduler,
      RequestMetrics* metrics, HealthCheck health, PrometheusPage prometheus = nullptr);
  int port() const { return http_->port(); }
  bool https() const { return http_->https(); }

 private:
  OpenAiServer(openai::ServedModel model, Scheduler* scheduler, RequestMetrics* metrics, HealthCheck health,
               std::string api_key)
      : model_(std::move(model)),
        scheduler_(scheduler),
        metrics_(metrics),
        health_(std::move(health)),
        api_key_(std::move(api_key)) {}

  // The 401 when an API key is configured and the request lacks it (checked on the head, before
  // the body is read).
  std::optional<HttpResponse> Unauthorized(const HttpRequest& req) const;
  void Generate(openai::Endpoint endpoint, const HttpRequest& req, HttpExchange& ex);
  // One request's sequences (a choice each), streamed as their tokens come; `choices` start as
  // the echoed prompts (or empty).
  void Stream(openai::Endpoint endpoint, const openai::ResponseHead& head,
              const std::string& request_id,
              const std::vector<std::shared_ptr<RequestHandle>>& handles,
              std::vector<openai::Choice> choices, const std::vector<bool>& counts_prompt,
              bool include_usage, HttpExchange& ex);
  void Fail(HttpExchange& ex, const absl::Status& status) const;
  void RecordFinished(const StreamEvent& last) const;
  void RecordFailed(absl::StatusCode code) const;

  const openai::ServedModel model_;
  Scheduler* const scheduler_;
  RequestMetrics* const metrics_;
  const HealthCheck health_;
  const std::string api_key_;
  std::unique_ptr<HttpServer> http_;  // last: stops (and joins the handlers) first
};

}  // namespace moe
