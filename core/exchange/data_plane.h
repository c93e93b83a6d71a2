// DataPlane: how the cluster exchange's rows move between ranks. Control messages (step headers,
// counts, expert ids, replies) always go through the Messenger (core/exchange/messenger.h) on the
// host; the rows themselves, the bulk of every exchange, go through a data plane: the messenger
// on host memory (here), or NCCL on GPU memory (core/mpi/nccl_data_plane.h) so that GPU ranks
// never copy rows through the host.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/exchange/messenger.h"
#include "core/exchange/peer_liveness.h"
#include "kernels/backend.h"

namespace moe {

class DataPlane {
 public:
  virtual ~DataPlane() = default;
  // "MPI (host memory)", or "NCCL 2.28.9 (cuda:1)".
  virtual std::string Describe() const = 0;
  // Whether Send and Recv take buffers in this backend's memory.
  virtual bool Reads(const kernels::Backend& memory) const = 0;
  // True when its buffers are GPU memory (a worker then receives into its backend's memory).
  virtual bool device_memory() const = 0;
  // Queue a transfer of `count` floats to or from rank `peer`. Transfers with one peer are matched
  // in the order queued, so both sides must queue the same sequence.
  virtual void Send(const float* data, int64_t count, int peer) = 0;
  virtual void Recv(float* data, int64_t count, int peer) = 0;
  // Runs what is queued as one group (an all-to-all-v) and waits, polling with back-off, until
  // all of it is done. Fails with Unavailable naming the peers when `timeout_seconds` pass or
  // `liveness` (may be null) says a peer is gone (an NCCL plane is then aborted and fails every
  // later call), and with the transport's error otherwise. The queue is empty afterwards either
  // way.
  virtual absl::Status Flush(double timeout_seconds, const std::string& what,
                             const PeerLiveness* liveness) = 0;

  // Transfers started and not yet waited for, so that a second group can be queued while the
  // first is in flight (two micro-batches' exchanges overlapping). Wait is Flush's wait.
  class InFlight {
   public:
    virtual ~InFlight() = default;
    virtual absl::Status Wait(double timeout_seconds, const std::string& what,
                              const PeerLiveness* liveness) = 0;
  };
  // Starts what is queued and hands it over; the queue is empty afterwards. Null where the plane
  // cannot keep a group in flight beside another (NCCL's groups run in stream order: a receive
  // that waits for a worker's compute would hold back the next group's sends); the caller then
  // uses Flush.
  virtual std::unique_ptr<InFlight> Detach() { return nullptr; }
};

// Host memory through `messenger` (not owned): MPI's point-to-point in the cluster, in-process
// ranks in tests. Describes itself as "<messenger> (host memory)".
std::unique_ptr<DataPlane> NewHostDataPlane(Messenger* messenger);

}  // namespace moe
