#include "coordinator/server/listeners.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace moe {
namespace {

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());  // readers never see half a number
}

std::string HostOf(const std::string& listen) { return listen.substr(0, listen.rfind(':')); }

}  // namespace

absl::Status ListenerOptions::Validate() const {
  if (max_prompt_bytes < 1) return absl::InvalidArgumentError("--max-prompt-bytes must be >= 1");
  if (max_message_bytes < 1024)
    return absl::InvalidArgumentError("--grpc-max-message-bytes must be >= 1024");
  if (max_streams_per_connection < 1)
    return absl::InvalidArgumentError("--grpc-max-streams must be >= 1");
  if (max_handler_threads < 4) return absl::InvalidArgumentError("--grpc-max-threads must be >= 4");
  if (max_watch_streams < 0) return absl::InvalidArgumentError("--max-watch-streams must be >= 0");
  if (min_watch_interval_ms < 10)
    return absl::InvalidArgumentError("--min-watch-interval-ms must be >= 10");
  return http.Validate();
}

absl::StatusOr<std::unique_ptr<Listeners>> Listeners::Start(const ListenerOptions& options,
                                                            ListenerParts parts) {
  std::unique_ptr<Listeners> l(new Listeners());
  l->parts_ = std::move(parts);
  const ListenerParts& p = l->parts_;

  // Prometheus first: a bad --metrics-listen fails before anything else listens.
  if (!options.metrics_listen.empty()) {
    auto started = MetricsServer::Start(options.metrics_listen, p.metrics_page);
    if (!started.ok()) return started.status();
    l->metrics_ = *std::move(started);
  }
  if (!options.http.listen.empty()) {
    openai::ServedModel model;
    model.id = options.served_model_name;
    model.tokenizer = p.tokenizer;
    model.config = p.config;
    model.limits = p.limits;
    model.max_prompt_bytes = options.max_prompt_bytes;
    model.chat = options.chat_template;
    model.created = static_cast<int64_t>(absl::ToUnixSeconds(absl::Now()));
    auto started = OpenAiServer::Start(options.http, std::move(model), p.scheduler,
                                       p.request_metrics, p.health, p.metrics_page);
    if (!started.ok()) return started.status();
    l->http_ = *std::move(started);
  }

  const bool loopback = IsLoopbackAddress(options.listen);
  const CallAuthorizer authorizer(options.security, loopback);
  l->inference_ =
      std::make_unique<InferenceService>(p.scheduler, p.tokenizer, p.config, p.placement,
                                         p.request_metrics, options.max_prompt_bytes, authorizer);
  l->inference_->set_weights(p.quantize, p.rank_weights);
  grpc::EnableDefaultHealthCheckService(true);
  // Server reflection (grpc.reflection.v1alpha): grpcurl, Postman and evans discover the API from
  // the port itself. It describes the services, it serves no data; the authorizer guards the calls.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, MakeServerCredentials(options.security), &l->port_);
  // Bounded: message size, calls per connection, handler threads (a call beyond them gets
  // RESOURCE_EXHAUSTED), and keepalive pings that find dead peers.
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  l->quota_ = std::make_unique<grpc::ResourceQuota>("moe-coordinator");
  l->quota_->SetMaxThreads(options.max_handler_threads);
  builder.SetResourceQuota(*l->quota_);
  builder.RegisterService(l->inference_.get());
  l->admin_ = std::make_unique<AdminService>(p.rebalancer, authorizer);
  builder.RegisterService(l->admin_.get());
  if (p.telemetry != nullptr) {
    l->telemetry_ = std::make_unique<TelemetryService>(
        p.telemetry, &l->stopping_,
        WatchLimits{options.max_watch_streams, options.min_watch_interval_ms}, authorizer);
    l->worker_telemetry_ =
        std::make_unique<WorkerTelemetryService>(p.telemetry, p.liveness, p.worker_token);
    builder.RegisterService(l->telemetry_.get());
    builder.RegisterService(l->worker_telemetry_.get());
  }
  l->server_ = builder.BuildAndStart();
  if (l->server_ == nullptr || l->port_ == 0) {
    // The HTTP API may already have queued a request; no step will run it.
    const absl::Status failed = absl::UnavailableError("the server failed to start");
    p.scheduler->StopAdmitting(failed);
    p.scheduler->FailAll(failed);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen on ", options.listen,
                     options.security.tls()
                         ? " (with TLS: does --tls-key belong to --tls-cert? gRPC's log above says)"
                         : ""));
  }
  l->SetServing(true);

  std::printf("moe-coordinator: serving moe.v1.Inference%s and moe.v1.Admin on %s:%d (%s)\n",
              p.telemetry != nullptr ? ", moe.v1.Telemetry" : "", HostOf(options.listen).c_str(),
              l->port_,
              !options.security.tls()                  ? "plaintext"
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
  if (l->metrics_ != nullptr) {
    std::printf("moe-coordinator: Prometheus metrics on http://%s:%d/metrics\n",
                HostOf(options.metrics_listen).c_str(), l->metrics_->port());
    WritePortFile(options.metrics_port_file, l->metrics_->port());
  }
  if (l->http_ != nullptr) {
    std::printf(
        "moe-coordinator: OpenAI-compatible API on %s://%s:%d/v1 (model \"%s\", chat template "
        "%s)\n",
        l->http_->https() ? "https" : "http", HostOf(options.http.listen).c_str(), l->http_->port(),
        options.served_model_name.c_str(), options.chat_template.name());
    if (options.chat_template.kind() == ChatTemplateKind::kNone) {
      std::fprintf(stderr, "moe-coordinator: warning: /v1/chat/completions is off: %s\n",
                   options.chat_template.disabled_reason().c_str());
    }
    if (!IsLoopbackAddress(options.http.listen) && options.http.api_key.empty()) {
      std::fprintf(
          stderr,
          "moe-coordinator: warning: the HTTP API on %s asks for no key: anyone who reaches it can "
          "generate; give --http-api-key-file\n",
          options.http.listen.c_str());
    }
    if (!IsLoopbackAddress(options.http.listen) && !l->http_->https()) {
      std::fprintf(
          stderr,
          "moe-coordinator: warning: the HTTP API on %s is plaintext: prompts, answers and the API "
          "key cross the network in clear; give --tls-cert and --tls-key\n",
          options.http.listen.c_str());
    }
  }
  std::fflush(stdout);
  if (p.on_listening) p.on_listening(l->port_);
  WritePortFile(options.port_file, l->port_);
  if (l->http_ != nullptr) WritePortFile(options.http_port_file, l->http_->port());
  return l;
}

Listeners::~Listeners() { Shutdown(); }

void Listeners::SetServing(bool serving) {
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(serving);
}

void Listeners::Shutdown() {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  // Open streams (watchers, worker reports) end at once instead of holding Shutdown to its
  // deadline.
  stopping_ = true;
  if (worker_telemetry_ != nullptr) worker_telemetry_->CancelAll();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace moe
