// The wire constants of the cluster exchange (core/cluster_exchange.h), shared by its two source
// files: the steps (cluster_exchange.cc) and the placement commands (cluster_placement.cc).
// Internal to core.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cluster_exchange.h"

namespace moe::protocol {

// MPI tags of the control messages (rows go through the data plane).
enum Tag : int { kHeaderTag = 101, kCountsTag, kIdsTag, kReplyTag, kSlotTableTag, kPlacementTag };
inline constexpr int kCoordinator = 0;

// ResourceExhausted when `elements` do not fit one MPI message (an int count).
absl::Status CheckMessageSize(int64_t elements, const char* what);

// The worker's half of one placement command: answers it, and returns the placement in force
// afterwards (`current`, or the new one after a commit). Errors are protocol failures.
absl::StatusOr<const ExpertPlacement*> AnswerPlacementCommand(const StepHeader& h,
                                                              const ExpertPlacement* current,
                                                              const ExpertServeOptions& opt);

}  // namespace moe::protocol
