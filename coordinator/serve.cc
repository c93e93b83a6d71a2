#include "coordinator/serve.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/engine/cluster_health.h"
#include "coordinator/engine/engine.h"
#include "coordinator/telemetry/server_metrics.h"

namespace moe {

absl::Status ServeOptions::Validate() const {
  if (absl::Status s = scheduler.Validate(); !s.ok()) return s;
  return ListenerOptions::Validate();
}

absl::Status Serve(const ServeOptions& options, ServeParts parts, const std::atomic<bool>& stop) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  // Declared in this order so that the listeners, which borrow the rest, go first.
  Engine engine(parts.runner, parts.tokenizer, options.scheduler, parts.rebalancer);
  RequestMetrics request_metrics;
  ClusterHealth health(parts.liveness, engine.scheduler());

  ListenerParts borrowed;
  borrowed.scheduler = engine.scheduler();
  borrowed.tokenizer = parts.tokenizer;
  borrowed.config = &parts.runner->config();
  borrowed.limits = options.scheduler.limits;
  // The placement in force, as the registry holds it.
  borrowed.placement = [placements = parts.placements] {
    if (placements == nullptr) return std::make_pair(std::shared_ptr<const ExpertPlacement>(), 1u);
    const PlacementRegistry::InForce now = placements->current();
    return std::make_pair(now.placement, now.epoch);
  };
  borrowed.request_metrics = &request_metrics;
  borrowed.telemetry = parts.telemetry;
  borrowed.liveness = parts.liveness;
  borrowed.worker_token = parts.worker_token;
  borrowed.rebalancer = parts.rebalancer;
  borrowed.rank_weights = std::move(parts.rank_weights);
  borrowed.quantize = std::move(parts.quantize);
  borrowed.health = [&health] { return health.status(); };
  borrowed.metrics_page = [&engine, &request_metrics, telemetry = parts.telemetry] {
    std::optional<LoadSnapshot> load;
    if (telemetry != nullptr) load = telemetry->Snapshot();
    return RenderServerMetrics(engine.stats(), request_metrics, load ? &*load : nullptr,
                               MOE_VERSION);
  };
  borrowed.on_listening = std::move(parts.on_listening);
  absl::StatusOr<std::unique_ptr<Listeners>> listeners =
      Listeners::Start(options, std::move(borrowed));
  if (!listeners.ok()) return listeners.status();
  health.OnServingChange([l = listeners->get()](bool serving) { l->SetServing(serving); });
  health.StartWatching();

  absl::Status engine_status = engine.RunUntil(stop);
  health.StopWatching();
  health.SetDown(engine_status.ok() ? absl::UnavailableError("the server is shutting down")
                                    : absl::UnavailableError(absl::StrCat(
                                          "the cluster failed: ", engine_status.message())));
  if (!engine_status.ok()) {
    // The model cannot run any more: everything in flight fails, nothing new is accepted. Said
    // here, first: when a worker died, mpirun is already ending the job.
    std::fprintf(stderr, "moe-coordinator: serving stopped: %s\n",
                 std::string(engine_status.message()).c_str());
    engine.FailAll(
        absl::UnavailableError(absl::StrCat("the cluster failed: ", engine_status.message())));
    (*listeners)->Shutdown();
    return engine_status;
  }
  // A worker known dead (mpirun, too, ends the job when one dies, with a signal here): nothing
  // can finish, so every request gets the reason now, naming the rank, rather than a closed socket.
  if (absl::Status dead = health.CheckKnownDead(); !dead.ok()) {
    engine.FailAll(dead);
    (*listeners)->Shutdown();
    return dead;
  }
  engine_status = engine.Drain(absl::Seconds(options.shutdown_grace_seconds));
  (*listeners)->Shutdown();
  if (!engine_status.ok()) return engine_status;
  const SchedulerStats stats = engine.stats();
  std::printf(
      "moe-coordinator: server stopped (%lld requests served; %lld steps, %lld of them in two "
      "micro-batches)\n",
      static_cast<long long>(stats.served), static_cast<long long>(stats.steps),
      static_cast<long long>(stats.split_steps));
  if (const std::string learned = parts.runner->overlap().Describe(); !learned.empty()) {
    std::printf("moe-coordinator: --overlap auto timed these kinds of step:\n%s", learned.c_str());
  }
  return absl::OkStatus();
}

}  // namespace moe
