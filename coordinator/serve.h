// Serve: the coordinator's serving mode. The engine steps on the calling thread, the listeners
// take requests, the cluster's health is watched beside them; on a signal the engine drains.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/engine/rebalancer.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/inference/scheduler.h"
#include "coordinator/server/listeners.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "core/model/tokenizer.h"
#include "core/placement/placement_registry.h"

namespace moe {

// Plain settings: the listeners' and the engine's, each a flag of moe-coordinator.
struct ServeOptions : ListenerOptions {
  SchedulerOptions scheduler;          // its limits bound every request
  double shutdown_grace_seconds = 30;  // in-flight requests get this long to finish

  // Says which flag is wrong.
  absl::Status Validate() const;
};

// What serving borrows; each must outlive Serve.
struct ServeParts {
  ModelRunner* runner = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const PlacementRegistry* placements = nullptr;  // the placement in force (may be null)
  // Load telemetry and the workers' lives (may be null: neither; both or neither).
  LoadAggregator* telemetry = nullptr;
  WorkerLiveness* liveness = nullptr;
  std::string worker_token;          // what worker report streams must present
  Rebalancer* rebalancer = nullptr;  // live re-placement (may be null)
  std::vector<RankWeights> rank_weights;
  std::string quantize;
  // Called once with the bound gRPC port before the first step; not if a port fails to open.
  std::function<void(int port)> on_listening;
};

// Serves until `stop` becomes true (graceful: stop accepting, let running requests finish within
// the grace period, fail the rest with UNAVAILABLE) or the engine fails (every request in flight
// gets UNAVAILABLE; the engine's error is returned). Runs the engine on the calling thread.
absl::Status Serve(const ServeOptions& options, ServeParts parts, const std::atomic<bool>& stop);

}  // namespace moe
