// The wire constants of the cluster protocol (core/exchange/cluster_exchange.h), shared by its two
// sides: the coordinator's (cluster_exchange.cc, cluster_placement.cc) and the workers'
// (worker/expert_server.cc).
#pragma once

#include <climits>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::protocol {

// Messenger tags of the control messages (rows go through the data plane).
enum Tag : int { kHeaderTag = 101, kCountsTag, kIdsTag, kReplyTag, kSlotTableTag, kPlacementTag };
inline constexpr int kCoordinator = 0;

// ResourceExhausted when `elements` do not fit one message (an MPI count is an int).
inline absl::Status CheckMessageSize(int64_t elements, const char* what) {
  if (elements > INT_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " of ", elements, " elements exceeds one MPI message; use smaller steps"));
  }
  return absl::OkStatus();
}

}  // namespace moe::protocol
