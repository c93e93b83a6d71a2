// Waiting on MPI requests without spinning a core, with a deadline that names the silent peer.
#pragma once

#include <mpi.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/peer_liveness.h"

namespace moe {

// Polls MPI_Testsome with back-off (core/backoff.h) instead of blocking inside MPI, where Open
// MPI would busy-poll.
//
// requests[i] is a message with rank peers[i]. Returns Unavailable naming the first peer still
// pending once `timeout_seconds` pass without any request completing (timeout <= 0: no deadline),
// Cancelled when *stop becomes true (stop may be null), and liveness's Unavailable as soon as it
// knows a pending peer is gone (liveness may be null).
absl::Status WaitAll(std::vector<MPI_Request>* requests, const std::vector<int>& peers,
                     double timeout_seconds, const std::string& what,
                     const std::atomic<bool>* stop = nullptr, const PeerLiveness* liveness = nullptr);

}  // namespace moe
