// Serve: runs the gRPC server around a scheduler on the engine thread until a signal or a fatal
// engine error, then shuts down gracefully.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "coordinator/rebalancer.h"
#include "coordinator/scheduler.h"
#include "coordinator/server/chat_template.h"
#include "coordinator/server/inference_service.h"
#include "coordinator/server/openai_server.h"
#include "coordinator/server/server_security.h"
#include "coordinator/telemetry/load_aggregator.h"

namespace moe {

struct ServeOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  std::string port_file;                   // if set, the bound port is written there
  double shutdown_grace_seconds = 30;      // in-flight requests get this long to finish
  SchedulerOptions scheduler;  // its limits bound every request
  // gRPC limits, each a flag of moe-coordinator.
  int64_t max_prompt_bytes = 1 << 20;     // Generate's text and Tokenize's, checked before tokenizing
  int max_message_bytes = 4 << 20;        // one gRPC message, either way
  int max_streams_per_connection = 256;   // concurrent calls on one HTTP/2 connection
  int max_handler_threads = 1024;         // calls served at once over all connections
  int max_watch_streams = 16;             // WatchLoad streams open at once
  int min_watch_interval_ms = 200;        // WatchLoad intervals below this are raised to it
  // TLS, mutual TLS and the administrative token (all off: plaintext, administration from
  // loopback only).
  ServerSecurity security;

  // Says which flag is wrong.
  absl::Status ValidateLimits() const;
  // Load telemetry (not owned; may be null): moe.v1.Telemetry for users and
  // moe.v1.WorkerTelemetry for the workers' reports, on the same port.
  LoadAggregator* telemetry = nullptr;
  // Live re-placement (not owned; may be null): ticked between steps, and the Rebalance RPC.
  Rebalancer* rebalancer = nullptr;
  std::string worker_token;  // what worker report streams must present (TelemetryEndpoint::token)
  // Prometheus /metrics on its own HOST:PORT (empty: off); its bound port goes to the file if set.
  std::string metrics_listen;
  std::string metrics_port_file;
  // The OpenAI-compatible HTTP API on its own port (http.listen empty: off); its bound port goes to
  // the file if set. The model is listed under served_model_name; chat uses chat_template.
  OpenAiServerOptions http;
  std::string http_port_file;
  std::string served_model_name = "moe";
  // How the ranks hold their weights (their start-up reports) and the --quantize they were
  // given: GetModelInfo answers with them.
  std::vector<RankWeights> rank_weights;
  std::string quantize;
  ChatTemplate chat_template = ChatTemplate::MistralV1();
  // Called once with the bound port when the server accepts calls, before the first step (the
  // coordinator then tells the workers where to report). Not called if the server fails to start.
  std::function<void(int port)> on_listening;
};

// Serves until *stop becomes true (graceful: stop accepting, let running requests finish within
// the grace period, fail the rest with UNAVAILABLE) or the engine fails (every request in
// flight gets UNAVAILABLE; the engine's error is returned). Must run on the engine thread.
absl::Status Serve(ModelRunner* runner, const Tokenizer* tokenizer, const ExpertPlacement* placement,
                   const ServeOptions& options, const std::atomic<bool>* stop);

}  // namespace moe
