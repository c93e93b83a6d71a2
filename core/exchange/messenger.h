// Messenger: the cluster's point-to-point messages between ranks, the seam under the exchange's
// control messages (step headers, counts, slot ids, replies, placement commands) and, on host
// memory, its rows. Implementations: MPI (core/mpi/mpi_messenger.h) for the real cluster, and
// in-process ranks on threads (core/exchange/in_process_messenger.h) for tests of the protocol.
//
// The contract is MPI's non-blocking point-to-point, kept small: a message from rank A to rank B
// under one tag matches B's receives from A under that tag in the order each side posted them;
// sends and receives are posted at once and complete when waited for; a wait has a deadline and
// asks what is known of the peers' liveness, so that a dead or hung rank fails a step instead of
// hanging it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/exchange/peer_liveness.h"

namespace moe {

// What a message's elements are (MPI sends typed data; the in-process messenger copies bytes).
enum class Element { kByte, kInt32, kInt64, kFloat };
size_t ElementBytes(Element type);

// How long, and on what, a wait may give up.
struct WaitLimits {
  // Unavailable naming the first silent peer once this long passes with nothing completing;
  // <= 0: no deadline (an idle worker waits for its next step as long as it takes).
  double timeout_seconds = 0;
  // Cancelled as soon as *stop is true (a signal handler's flag); may be null.
  const std::atomic<bool>* stop = nullptr;
  // Unavailable as soon as it says a pending peer is gone; may be null.
  const PeerLiveness* liveness = nullptr;
};

// A group of posted transfers, waited for together. Destroying a group withdraws whatever in it
// has not completed (a receive that will never be matched, a send to a peer that is gone), so a
// failed step leaves nothing posted behind it. Not thread-safe: one thread uses a group.
class Transfers {
 public:
  virtual ~Transfers() = default;
  // Until every transfer in the group is done, or `limits` end the wait (see WaitLimits; the
  // message starts with `what`). A failed wait leaves the rest posted: it may be waited again.
  virtual absl::Status Wait(const std::string& what, const WaitLimits& limits) = 0;
};

// One rank's end. Not thread-safe: the thread that drives the protocol on this rank uses it.
class Messenger {
 public:
  virtual ~Messenger() = default;
  // "MPI", "in-process": how data planes built on it describe themselves.
  virtual std::string Describe() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;  // ranks in all, this one included
  // Posts `count` elements to (from) rank `peer` under `tag`. The buffer must stay valid, and a
  // send's unchanged, until the group holding the transfer completes or is destroyed. A message
  // larger than the receive's buffer is an error of the wait.
  virtual void Send(const void* data, int64_t count, Element type, int peer, int tag) = 0;
  virtual void Recv(void* data, int64_t count, Element type, int peer, int tag) = 0;
  // Every transfer posted since the last Take, as one group.
  virtual std::unique_ptr<Transfers> Take() = 0;
};

// The wait both implementations share: polls `pending` with back-off (core/base/backoff.h)
// instead of spinning a core, under `limits`.
class PendingTransfers {
 public:
  virtual ~PendingTransfers() = default;
  // Completes what it can without blocking; returns how many transfers completed now, or an
  // error that ends the wait (a truncated message).
  virtual absl::StatusOr<int> Poll() = 0;
  virtual bool done() const = 0;
  // The peer of every transfer not yet complete, in the order posted (for the liveness check
  // and the message naming the silent peer).
  virtual std::vector<int> PendingPeers() const = 0;
};
absl::Status WaitForTransfers(PendingTransfers* pending, const std::string& what,
                              const WaitLimits& limits);

}  // namespace moe
