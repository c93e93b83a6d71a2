// OpenAiServer: the OpenAI-compatible HTTP API (--http-listen) in front of the same scheduler as
// the gRPC port: POST /v1/completions and /v1/chat/completions (whole or streamed as server-sent
// events), GET /v1/models, GET /health. Same limits, same queue, same cancellation: a client that
// disconnects has its request cancelled and its KV cache freed within a step or 100 ms.
//
// Thread-safety: handlers run on cpp-httplib's pool (at most max_threads connections at once) and
// touch only the scheduler's thread-safe side (Submit, handles).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/scheduler.h"
#include "coordinator/server/openai_protocol.h"
#include "coordinator/telemetry/http_listener.h"
#include "coordinator/telemetry/request_metrics.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace moe {

struct OpenAiServerOptions {
  std::string listen;           // --http-listen HOST:PORT (port 0 picks a free one)
  std::string api_key;          // --http-api-key-file's first line; "": no key asked
  int max_threads = 128;        // --http-max-threads: connections served at once (more wait)
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

  // Nothing is owned; the scheduler and metrics (may be null) must outlive the server.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(const OpenAiServerOptions& options,
                                                             openai::ServedModel model, Scheduler* scheduler,
                                                             RequestMetrics* metrics, HealthCheck health);
  int port() const { return listener_->port(); }
  bool https() const { return https_; }

 private:
  struct Stream;  // one streamed response's state

  OpenAiServer(openai::ServedModel model, Scheduler* scheduler, RequestMetrics* metrics, HealthCheck health,
               std::string api_key)
      : model_(std::move(model)),
        scheduler_(scheduler),
        metrics_(metrics),
        health_(std::move(health)),
        api_key_(std::move(api_key)) {}

  // False (and the 401 written) when an API key is configured and the request lacks it.
  bool Authorized(const httplib::Request& req, httplib::Response& res) const;
  void Generate(openai::Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void Fail(httplib::Response& res, const absl::Status& status) const;
  void RecordFinished(const StreamEvent& last) const;
  void RecordFailed(absl::StatusCode code) const;

  const openai::ServedModel model_;
  Scheduler* const scheduler_;
  RequestMetrics* const metrics_;
  const HealthCheck health_;
  const std::string api_key_;
  bool https_ = false;
  std::unique_ptr<HttpListener> listener_;  // last: stops (and joins the handlers) first
};

}  // namespace moe
