// Waiting on MPI requests without spinning a core, with a deadline that names the silent peer
// (the shared wait of core/exchange/messenger.h over MPI_Testsome).
#pragma once

#include <mpi.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/exchange/messenger.h"
#include "core/exchange/peer_liveness.h"

namespace moe {

// requests[i] is a message with rank peers[i]; completed ones become MPI_REQUEST_NULL. Returns
// Unavailable naming the first peer still pending once `timeout_seconds` pass without any request
// completing (timeout <= 0: no deadline), Cancelled when *stop becomes true (stop may be null),
// and liveness's Unavailable as soon as it knows a pending peer is gone (liveness may be null).
absl::Status WaitAll(std::vector<MPI_Request>* requests, const std::vector<int>& peers,
                     double timeout_seconds, const std::string& what,
                     const std::atomic<bool>* stop = nullptr,
                     const PeerLiveness* liveness = nullptr);

// Withdraws every request still pending (MPI_Cancel, then MPI_Request_free).
void CancelPending(std::vector<MPI_Request>* requests);

}  // namespace moe
