#include "coordinator/server/serve.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "coordinator/telemetry/load_metrics.h"
#include "coordinator/telemetry/metrics_server.h"
#include "coordinator/telemetry/process_metrics.h"
#include "coordinator/telemetry/telemetry_service.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace moe {
namespace {

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());  // readers never see half a number
}

}  // namespace

absl::Status ServeOptions::ValidateLimits() const {
  if (max_prompt_bytes < 1) return absl::InvalidArgumentError("--max-prompt-bytes must be >= 1");
  if (max_message_bytes < 1024) return absl::InvalidArgumentError("--grpc-max-message-bytes must be >= 1024");
  if (max_streams_per_connection < 1) return absl::InvalidArgumentError("--grpc-max-streams must be >= 1");
  if (max_handler_threads < 4) return absl::InvalidArgumentError("--grpc-max-threads must be >= 4");
  if (max_watch_streams < 0) return absl::InvalidArgumentError("--max-watch-streams must be >= 0");
  if (min_watch_interval_ms < 10) return absl::InvalidArgumentError("--min-watch-interval-ms must be >= 10");
  return absl::OkStatus();
}

absl::Status Serve(ModelRunner* runner, const Tokenizer* tokenizer, const ExpertPlacement* placement,
                   const ServeOptions& options, const std::atomic<bool>* stop) {
  if (absl::Status s = options.scheduler.Validate(); !s.ok()) return s;
  if (absl::Status s = options.ValidateLimits(); !s.ok()) return s;
  Scheduler scheduler(runner, tokenizer, options.scheduler);
  RequestMetrics request_metrics;
  // The placement in force: the telemetry's, which follows live re-placements; else the fixed one.
  InferenceService::PlacementSource placement_source = [&options, placement] {
    if (options.telemetry != nullptr) {
      return std::make_pair(options.telemetry->placement(), options.telemetry->placement_epoch());
    }
    return std::make_pair(placement == nullptr ? nullptr
                                               : std::shared_ptr<const ExpertPlacement>(
                                                     placement, [](const ExpertPlacement*) {}),
                          1u);
  };
  const bool loopback = IsLoopbackAddress(options.listen);
  const CallAuthorizer authorizer(options.security, loopback);
  InferenceService service(&scheduler, tokenizer, &runner->config(), placement_source, &request_metrics,
                           options.max_prompt_bytes, authorizer);
  service.set_weights(options.quantize, options.rank_weights);
  std::atomic<bool> stopping{false};  // ends WatchLoad streams when serving ends
  std::unique_ptr<TelemetryService> telemetry;
  std::unique_ptr<WorkerTelemetryService> worker_telemetry;
  grpc::EnableDefaultHealthCheckService(true);
  // Server reflection (grpc.reflection.v1alpha): grpcurl, Postman and evans discover the API from
  // the port itself. It describes the services, it serves no data; the authorizer guards the calls.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, MakeServerCredentials(options.security), &port);
  // Bounded: message size, calls per connection, handler threads (a call beyond them gets
  // RESOURCE_EXHAUSTED), and keepalive pings that find dead peers.
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  grpc::ResourceQuota quota("moe-coordinator");
  quota.SetMaxThreads(options.max_handler_threads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(&service);
  if (options.telemetry != nullptr) {
    telemetry = std::make_unique<TelemetryService>(
        options.telemetry, &stopping, options.rebalancer,
        WatchLimits{options.max_watch_streams, options.min_watch_interval_ms}, authorizer);
    worker_telemetry = std::make_unique<WorkerTelemetryService>(options.telemetry, options.worker_token);
    builder.RegisterService(telemetry.get());
    builder.RegisterService(worker_telemetry.get());
  }

  // The Prometheus page: on --metrics-listen's port, and at /metrics of the HTTP API.
  auto prometheus_page = [&] {
    PrometheusText page;
    const SchedulerStats stats = scheduler.stats();
    // Counters since the server started (the load counters below restart at ResetLoad).
    page.Family("moe_steps_total", "counter", "Forward steps (batches) since the server started.");
    page.Sample("moe_steps_total", static_cast<double>(stats.steps));
    page.Family("moe_tokens_total", "counter",
                "Tokens through the model (prompt and generated) since the server started.");
    page.Sample("moe_tokens_total", static_cast<double>(stats.tokens));
    page.Family("moe_requests_running", "gauge", "Requests in the running batch.");
    page.Sample("moe_requests_running", stats.running);
    page.Family("moe_requests_waiting", "gauge", "Requests waiting for admission.");
    page.Sample("moe_requests_waiting", stats.waiting);
    page.Family("moe_kv_cache_bytes", "gauge",
                "KV cache bytes reserved by running requests (state=used) and the budget.");
    page.Sample("moe_kv_cache_bytes", {{"state", "used"}},
                static_cast<double>(stats.kv_bytes_used));
    page.Sample("moe_kv_cache_bytes", {{"state", "budget"}},
                static_cast<double>(stats.kv_bytes_budget));
    page.Family("moe_overlapped_steps_total", "counter",
                "Forward steps run as two micro-batches in ping-pong (--overlap), since the server "
                "started.");
    page.Sample("moe_overlapped_steps_total", static_cast<double>(stats.split_steps));
    request_metrics.Render(&page);
    if (options.telemetry != nullptr) RenderLoadMetrics(options.telemetry->Snapshot(), &page);
    RenderProcessMetrics(MOE_VERSION, &page);
    return page.text();
  };
  // Prometheus first: a bad --metrics-listen fails before anything else listens.
  std::unique_ptr<MetricsServer> metrics;
  if (!options.metrics_listen.empty()) {
    auto started = MetricsServer::Start(options.metrics_listen, prometheus_page);
    if (!started.ok()) return started.status();
    metrics = *std::move(started);
  }

  // What /health says: OK, or why the cluster cannot serve (a lost worker, shutting down).
  absl::Mutex health_mu;
  absl::Status health;  // guarded by health_mu
  auto set_health = [&](absl::Status s) {
    absl::MutexLock lock(&health_mu);
    health = std::move(s);
  };
  std::unique_ptr<OpenAiServer> http;
  if (!options.http.listen.empty()) {
    openai::ServedModel model;
    model.id = options.served_model_name;
    model.tokenizer = tokenizer;
    model.config = &runner->config();
    model.limits = options.scheduler.limits;
    model.max_prompt_bytes = options.max_prompt_bytes;
    model.chat = options.chat_template;
    model.created = static_cast<int64_t>(absl::ToUnixSeconds(absl::Now()));
    auto started = OpenAiServer::Start(
        options.http, std::move(model), &scheduler, &request_metrics,
        [&] {
          absl::MutexLock lock(&health_mu);
          return health;
        },
        prometheus_page);
    if (!started.ok()) return started.status();
    http = *std::move(started);
  }

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    // The HTTP API may already have queued a request; no step will run it.
    scheduler.StopAdmitting(absl::UnavailableError("the server failed to start"));
    scheduler.FailAll(absl::UnavailableError("the server failed to start"));
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot listen on ", options.listen,
        options.security.tls() ? " (with TLS: does --tls-key belong to --tls-cert? gRPC's log above says)" : ""));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  std::printf("moe-coordinator: serving moe.v1.Inference%s on %s:%d (%s)\n",
              options.telemetry != nullptr ? " and moe.v1.Telemetry" : "", host.c_str(), port,
              !options.security.tls()                ? "plaintext"
              : options.security.client_ca_pem.empty() ? "TLS"
                                                       : "TLS, client certificates required");
  if (!loopback && !options.security.tls()) {
    std::fprintf(stderr,
                 "moe-coordinator: warning: plaintext beyond loopback: anyone who reaches %s can "
                 "generate and read the telemetry, and the workers' token crosses the network in "
                 "clear; give --tls-cert and --tls-key (README, \"Securing the port\")\n",
                 options.listen.c_str());
  }
  if (!loopback && options.security.admin_token.empty()) {
    std::fprintf(stderr,
                 "moe-coordinator: administrative calls (ResetLoad, Rebalance) are refused on %s: "
                 "give --admin-token-file to allow them\n",
                 options.listen.c_str());
  }
  if (metrics != nullptr) {
    const std::string metrics_host = options.metrics_listen.substr(0, options.metrics_listen.rfind(':'));
    std::printf("moe-coordinator: Prometheus metrics on http://%s:%d/metrics\n", metrics_host.c_str(),
                metrics->port());
    WritePortFile(options.metrics_port_file, metrics->port());
  }
  if (http != nullptr) {
    const std::string http_host = options.http.listen.substr(0, options.http.listen.rfind(':'));
    std::printf("moe-coordinator: OpenAI-compatible API on %s://%s:%d/v1 (model \"%s\", chat template %s)\n",
                http->https() ? "https" : "http", http_host.c_str(), http->port(), options.served_model_name.c_str(),
                options.chat_template.name());
    if (options.chat_template.kind() == ChatTemplateKind::kNone) {
      std::fprintf(stderr, "moe-coordinator: warning: /v1/chat/completions is off: %s\n",
                   options.chat_template.disabled_reason().c_str());
    }
    if (!IsLoopbackAddress(options.http.listen) && options.http.api_key.empty()) {
      std::fprintf(stderr,
                   "moe-coordinator: warning: the HTTP API on %s asks for no key: anyone who reaches it can "
                   "generate; give --http-api-key-file\n",
                   options.http.listen.c_str());
    }
    if (!IsLoopbackAddress(options.http.listen) && !http->https()) {
      std::fprintf(stderr,
                   "moe-coordinator: warning: the HTTP API on %s is plaintext: prompts, answers and the API "
                   "key cross the network in clear; give --tls-cert and --tls-key\n",
                   options.http.listen.c_str());
    }
  }
  std::fflush(stdout);
  // Open streams (watchers, worker reports) end at once instead of holding Shutdown to its deadline.
  auto shutdown = [&] {
    stopping = true;
    if (worker_telemetry != nullptr) worker_telemetry->CancelAll();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  };
  if (options.on_listening) options.on_listening(port);
  WritePortFile(options.port_file, port);
  if (http != nullptr) WritePortFile(options.http_port_file, http->port());

  // A worker whose heartbeat is lost: health says NOT_SERVING and new requests fail at once,
  // naming it, instead of waiting --worker-timeout-s for a step that cannot finish. Both return
  // when it reports again.
  std::vector<int> lost;
  std::string lost_reason;  // why, one clause per lost rank
  bool lost_gone = false;   // one of them is known dead (its report stream closed), not just silent
  auto check_workers = [&] {
    if (options.telemetry == nullptr) return;
    std::vector<int> now_lost = options.telemetry->LostWorkers();
    if (now_lost == lost) return;
    lost = std::move(now_lost);
    if (lost.empty()) {
      std::fprintf(stderr, "moe-coordinator: every worker reports again; accepting requests\n");
      lost_reason.clear();
      lost_gone = false;
      scheduler.ResumeAdmitting();
      server->GetHealthCheckService()->SetServingStatus(true);
      set_health(absl::OkStatus());
      return;
    }
    std::vector<std::string> why;
    lost_gone = false;
    for (int rank : lost) {
      const absl::Status gone = options.telemetry->CheckAlive(rank);
      lost_gone |= !gone.ok();
      why.push_back(gone.ok() ? absl::StrCat("worker rank ", rank, " is not answering (its heartbeat is lost)")
                              : std::string(gone.message()));
    }
    lost_reason = absl::StrJoin(why, "; ");
    std::fprintf(stderr, "moe-coordinator: worker rank %s lost: %s; refusing new requests\n",
                 absl::StrJoin(lost, ", ").c_str(), lost_reason.c_str());
    scheduler.StopAdmitting(absl::UnavailableError(absl::StrCat(lost_reason, "; the cluster cannot serve")));
    server->GetHealthCheckService()->SetServingStatus(false);
    set_health(absl::UnavailableError(lost_reason));
  };
  // The heartbeat watcher runs off the engine thread: a worker that hangs inside a step (the loop
  // blocked on it until --worker-timeout-s) is seen lost within the heartbeat bound all the same.
  // It alone calls check_workers until it is joined.
  absl::Notification watcher_stop;
  std::thread watcher;
  if (options.telemetry != nullptr) {
    watcher = std::thread([&] {
      do {
        check_workers();
      } while (!watcher_stop.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
    });
  }
  auto stop_watcher = [&] {
    watcher_stop.Notify();
    if (watcher.joinable()) watcher.join();
  };
  absl::Status engine;
  while (!stop->load()) {
    // Between steps: a live re-placement advances here (its commit is a step boundary).
    if (options.rebalancer != nullptr) {
      engine = options.rebalancer->Tick();
      if (!engine.ok()) break;
    }
    if (!scheduler.WaitForWork(absl::Milliseconds(options.rebalancer != nullptr ? 20 : 50))) continue;
    engine = scheduler.Step();
    if (!engine.ok()) break;
  }
  stop_watcher();
  if (options.rebalancer != nullptr) options.rebalancer->Stop(/*cluster_usable=*/engine.ok());
  server->GetHealthCheckService()->SetServingStatus(false);
  set_health(engine.ok() ? absl::UnavailableError("the server is shutting down")
                         : absl::UnavailableError(absl::StrCat("the cluster failed: ", engine.message())));
  if (!engine.ok()) {
    // The model cannot run any more: everything in flight fails, nothing new is accepted. Said
    // here, first: when a worker died, mpirun is already ending the job.
    std::fprintf(stderr, "moe-coordinator: serving stopped: %s\n", std::string(engine.message()).c_str());
    const absl::Status lost = absl::UnavailableError(absl::StrCat("the cluster failed: ", engine.message()));
    scheduler.StopAdmitting(lost);
    scheduler.FailAll(lost);
    shutdown();
    return engine;
  }
  // A worker known dead (mpirun, too, ends the job when one dies, with a signal here): nothing
  // can finish, so every request gets the reason now, naming the rank, rather than a closed socket.
  check_workers();
  if (lost_gone) {
    const absl::Status gone = absl::UnavailableError(absl::StrCat("the cluster failed: ", lost_reason));
    scheduler.StopAdmitting(gone);
    scheduler.FailAll(gone);
    shutdown();
    return gone;
  }
  // Graceful: refuse new requests, let the running ones finish within the grace period.
  scheduler.StopAdmitting(absl::UnavailableError("the server is shutting down"));
  const absl::Time deadline = absl::Now() + absl::Seconds(options.shutdown_grace_seconds);
  while (absl::Now() < deadline) {
    const SchedulerStats s = scheduler.stats();
    if (s.running == 0 && s.waiting == 0) break;
    if (scheduler.WaitForWork(absl::Milliseconds(10))) {
      if (absl::Status st = scheduler.Step(); !st.ok()) {
        scheduler.FailAll(absl::UnavailableError(absl::StrCat("the cluster failed: ", st.message())));
        shutdown();
        return st;
      }
    }
  }
  scheduler.FailAll(absl::UnavailableError("the server shut down before the request finished"));
  shutdown();
  const SchedulerStats stats = scheduler.stats();
  std::printf("moe-coordinator: server stopped (%lld requests served; %lld steps, %lld of them in two "
              "micro-batches)\n",
              static_cast<long long>(stats.served), static_cast<long long>(stats.steps),
              static_cast<long long>(stats.split_steps));
  if (const std::string learned = runner->overlap().Describe(); !learned.empty()) {
    std::printf("moe-coordinator: --overlap auto timed these kinds of step:\n%s", learned.c_str());
  }
  return absl::OkStatus();
}

}  // namespace moe
