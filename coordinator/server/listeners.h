// Listeners: the coordinator's ports in front of the engine's scheduler. gRPC (moe.v1.Inference;
// with load telemetry moe.v1.Telemetry and moe.v1.WorkerTelemetry; health and reflection), the
// OpenAI-compatible HTTP API and Prometheus /metrics. They submit and read; they never step.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/engine/rebalancer.h"
#include "coordinator/inference/scheduler.h"
#include "coordinator/server/admin_service.h"
#include "coordinator/server/chat_template.h"
#include "coordinator/server/inference_service.h"
#include "coordinator/server/metrics_server.h"
#include "coordinator/server/openai_server.h"
#include "coordinator/server/server_security.h"
#include "coordinator/server/telemetry_service.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "grpcpp/grpcpp.h"

namespace moe {

// Plain settings, each a flag of moe-coordinator.
struct ListenerOptions {
  std::string listen = "127.0.0.1:50051";  // gRPC host:port; port 0 picks a free one
  std::string port_file;                   // if set, the bound port is written there
  // gRPC limits.
  int64_t max_prompt_bytes = 1 << 20;  // Generate's text and Tokenize's, checked before tokenizing
  int max_message_bytes = 4 << 20;     // one gRPC message, either way
  int max_streams_per_connection = 256;  // concurrent calls on one HTTP/2 connection
  int max_handler_threads = 1024;        // calls served at once over all connections
  int max_watch_streams = 16;            // WatchLoad streams open at once
  int min_watch_interval_ms = 200;       // WatchLoad intervals below this are raised to it
  // TLS, mutual TLS and the administrative token (all off: plaintext, administration from
  // loopback only).
  ServerSecurity security;
  // Prometheus /metrics on its own HOST:PORT (empty: off); its bound port goes to the file if set.
  std::string metrics_listen;
  std::string metrics_port_file;
  // The OpenAI-compatible HTTP API on its own port (http.listen empty: off); its bound port goes to
  // the file if set. The model is listed under served_model_name; chat uses chat_template.
  OpenAiServerOptions http;
  std::string http_port_file;
  std::string served_model_name = "moe";
  ChatTemplate chat_template = ChatTemplate::MistralV1();

  // Says which flag is wrong (the gRPC limits and the HTTP API's).
  absl::Status Validate() const;
};

// What the listeners borrow: each must outlive them. Pointers marked "may be null" switch a part
// off.
struct ListenerParts {
  Scheduler* scheduler = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const MixtralConfig* config = nullptr;
  RequestLimits limits;  // what the scheduler accepts: the HTTP API's /v1/models says them
  InferenceService::PlacementSource placement;  // the placement in force, for GetModelInfo
  RequestMetrics* request_metrics = nullptr;
  // Load telemetry (may be null): moe.v1.Telemetry for users and moe.v1.WorkerTelemetry for the
  // workers' reports, whose streams must present worker_token.
  LoadAggregator* telemetry = nullptr;
  WorkerLiveness* liveness = nullptr;  // the workers' lives, which their report streams feed
  std::string worker_token;
  Rebalancer* rebalancer = nullptr;  // the Rebalance RPC (may be null)
  // How the ranks hold their weights (their start-up reports) and the --quantize they were given:
  // GetModelInfo answers with them.
  std::vector<RankWeights> rank_weights;
  std::string quantize;
  OpenAiServer::HealthCheck health;           // /health's answer
  OpenAiServer::PrometheusPage metrics_page;  // /metrics' page, on both HTTP ports
  // Called once with the bound gRPC port when every port accepts calls, before the port files are
  // written (the coordinator then tells the workers where to report). May be empty.
  std::function<void(int port)> on_listening;
};

class Listeners {
 public:
  // Binds every port (Prometheus first, then HTTP, then gRPC), prints where each listens with the
  // warnings a public address deserves, calls on_listening and writes the port files. An error
  // names the port that failed; nothing is left listening then.
  static absl::StatusOr<std::unique_ptr<Listeners>> Start(const ListenerOptions& options,
                                                          ListenerParts parts);
  ~Listeners();

  // The gRPC health service's state (serving or not).
  void SetServing(bool serving);
  // Ends open streams (WatchLoad, worker reports) at once, then gRPC within 2 s. Idempotent.
  void Shutdown();

 private:
  Listeners() = default;

  ListenerParts parts_;
  std::atomic<bool> stopping_{false};  // ends WatchLoad streams when serving ends
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<TelemetryService> telemetry_;
  std::unique_ptr<WorkerTelemetryService> worker_telemetry_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<OpenAiServer> http_;
  std::unique_ptr<grpc::ResourceQuota> quota_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moe
