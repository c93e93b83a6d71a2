#include "core/placement/placement_registry.h"

#include <utility>

namespace moe {

PlacementRegistry::PlacementRegistry(std::shared_ptr<const ExpertPlacement> initial) {
  in_force_.placement = std::move(initial);
  in_force_.epoch = 1;
}

std::unique_ptr<PlacementRegistry> PlacementRegistry::Borrowing(const ExpertPlacement* initial) {
  return std::make_unique<PlacementRegistry>(
      std::shared_ptr<const ExpertPlacement>(initial, [](const ExpertPlacement*) {}));
}

PlacementRegistry::InForce PlacementRegistry::current() const {
  absl::MutexLock lock(&mu_);
  return in_force_;
}

uint32_t PlacementRegistry::epoch() const {
  absl::MutexLock lock(&mu_);
  return in_force_.epoch;
}

const ExpertPlacement& PlacementRegistry::placement() const {
  absl::MutexLock lock(&mu_);
  return *in_force_.placement;
}

void PlacementRegistry::Subscribe(Subscriber* subscriber) { subscribers_.push_back(subscriber); }

void PlacementRegistry::Commit(std::shared_ptr<const ExpertPlacement> next, uint32_t epoch) {
  {
    absl::MutexLock lock(&mu_);
    in_force_.placement = next;
    in_force_.epoch = epoch;
  }
  for (Subscriber* s : subscribers_) s->OnPlacementCommitted(next, epoch);
}

}  // namespace moe
