// PeerLiveness: what a rank knows, outside MPI, about whether a peer rank still lives, so that a
// wait on a peer known to be gone ends at once instead of at its deadline.
#pragma once

#include <vector>

#include "absl/status/status.h"

namespace moe {

class PeerLiveness {
 public:
  virtual ~PeerLiveness() = default;
  // OK while `rank` may still answer; Unavailable saying why once it is known to be gone (its
  // process or its host died: a message from it will never come). Thread-safe.
  virtual absl::Status CheckAlive(int rank) const = 0;
};

// What the coordinator knows of its workers' heartbeats: besides PeerLiveness (known gone), which
// ranks have gone silent (perhaps only hung).
class WorkerHeartbeats : public PeerLiveness {
 public:
  // Ranks that reported once and then went silent or lost their stream; ascending. Thread-safe.
  virtual std::vector<int> LostWorkers() const = 0;
};

}  // namespace moe
