#include "coordinator/server/serve.h"

#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace moe {

absl::Status Serve(ModelRunner* runner, const Tokenizer* tokenizer, const ExpertPlacement* placement,
                   const ServeOptions& options, const std::atomic<bool>* stop) {
  if (absl::Status s = options.scheduler.Validate(); !s.ok()) return s;
  if (options.limits.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens-limit must be >= 1");
  Scheduler scheduler(runner, tokenizer, options.scheduler);
  InferenceService service(&scheduler, tokenizer, &runner->config(), placement, options.limits);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", options.listen));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  std::printf("moe-coordinator: serving moe.v1.Inference on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  if (!options.port_file.empty()) {
    const std::string tmp = options.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), options.port_file.c_str());  // readers never see half a number
  }

  absl::Status engine;
  while (!stop->load()) {
    if (!scheduler.WaitForWork(absl::Milliseconds(50))) continue;
    engine = scheduler.Step();
    if (!engine.ok()) break;
  }
  server->GetHealthCheckService()->SetServingStatus(false);
  if (!engine.ok()) {
    // The model cannot run any more: everything in flight fails, nothing new is accepted.
    const absl::Status lost = absl::UnavailableError(absl::StrCat("the cluster failed: ", engine.message()));
    scheduler.StopAdmitting(lost);
    scheduler.FailAll(lost);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return engine;
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
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
        return st;
      }
    }
  }
  scheduler.FailAll(absl::UnavailableError("the server shut down before the request finished"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::printf("moe-coordinator: server stopped (%lld requests served)\n",
              static_cast<long long>(scheduler.stats().served));
  return absl::OkStatus();
}

}  // namespace moe
