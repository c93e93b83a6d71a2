// PlacementRegistry: the placement in force and its epoch, in one place. The exchange dispatches
// by it, the load telemetry counts against it (a subscriber), GetModelInfo shows it; a live
// re-placement commits through it, so no two copies can disagree about which placement is in
// force.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/placement/expert_placement.h"

namespace moe {

class PlacementRegistry {
 public:
  // Told of every commit, in the order subscribed, before Commit returns. Called on the
  // committing thread with no lock of the registry's held (it may read current()).
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    virtual void OnPlacementCommitted(const std::shared_ptr<const ExpertPlacement>& placement,
                                      uint32_t epoch) = 0;
  };

  // The placement at start-up, epoch 1. REQUIRES: initial is not null.
  explicit PlacementRegistry(std::shared_ptr<const ExpertPlacement> initial);
  // The same, borrowing a placement that outlives the registry.
  static std::unique_ptr<PlacementRegistry> Borrowing(const ExpertPlacement* initial);

  struct InForce {
    std::shared_ptr<const ExpertPlacement> placement;
    uint32_t epoch = 0;
  };
  // Thread-safe.
  InForce current() const;
  uint32_t epoch() const;
  // The placement in force, for the thread that commits (the step loop's): it changes only under
  // that thread's own Commit, so the reference stays valid until then.
  const ExpertPlacement& placement() const;

  // REQUIRES: before any Commit; not owned, outlives the registry.
  void Subscribe(Subscriber* subscriber);
  // Makes `next` the placement in force as `epoch` (REQUIRES: above the current epoch), then
  // tells every subscriber. Thread-safe, though in the cluster only the step loop commits.
  void Commit(std::shared_ptr<const ExpertPlacement> next, uint32_t epoch);

 private:
  mutable absl::Mutex mu_;
  InForce in_force_ ABSL_GUARDED_BY(mu_);
  std::vector<Subscriber*> subscribers_;
};

}  // namespace moe
