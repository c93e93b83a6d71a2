// PeerLiveness: what a rank knows, outside MPI, about whether a peer rank still lives, so that a
// wait on a peer known to be gone ends at once instead of at its deadline.
#pragma once

#include "absl/status/status.h"

namespace moe {

class PeerLiveness {
 public:
  virtual ~PeerLiveness() = default;
  // OK while `rank` may still answer; Unavailable saying why once it is known to be gone (its
  // process or its host died: a message from it will never come). Thread-safe.
  virtual absl::Status CheckAlive(int rank) const = 0;
};

}  // namespace moe
