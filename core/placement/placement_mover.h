// PlacementMover: what a live re-placement needs of the exchange (ClusterExchange implements it
// over MPI; tests fake it). The coordinator's Rebalancer drives it between steps, on the step
// loop's thread: Begin (every worker starts loading what the new placement adds), Poll until
// ready, then Commit (every rank switches at this step boundary), or Abort (the old placement
// stays).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/placement/expert_placement.h"

namespace moe {

// Where a re-placement stands over all workers.
struct PlacementProgress {
  bool ready = false;       // every worker has loaded its new experts
  int loading = 0;          // workers still loading
  int experts_loaded = 0;   // (layer, expert) pairs loaded, summed over workers
  double load_seconds = 0;  // the slowest worker's loading time so far
};

class PlacementMover {
 public:
  virtual ~PlacementMover() = default;
  // FailedPrecondition (naming the worker) when a worker refuses or fails to load: every other
  // worker has then dropped what it loaded and the placement in force stays. Other errors mean the
  // cluster cannot go on (a worker that does not answer).
  virtual absl::Status BeginPlacement(std::shared_ptr<const ExpertPlacement> next,
                                      uint32_t epoch) = 0;
  virtual absl::StatusOr<PlacementProgress> PollPlacement() = 0;
  // REQUIRES: PollPlacement said ready. From the next step on, rows go by the new placement.
  virtual absl::Status CommitPlacement() = 0;
  virtual absl::Status AbortPlacement() = 0;
};

}  // namespace moe
