// ExpertLayout: how one layer's dispatched rows are grouped, by physical expert slot
// (core/placement/expert_placement.h). It travels beside the rows, which stay in a backend's
// memory.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/placement/expert_placement.h"

namespace moe {

// Rows of slot s are [slot_offsets[s], slot_offsets[s + 1]) of a [n_rows, hidden] buffer.
struct ExpertLayout {
  int layer = 0;
  int64_t hidden = 0;                 // row width
  std::vector<int64_t> slot_offsets;  // [n_slots + 1], non-decreasing, starts at 0

  int64_t n_rows() const { return slot_offsets.empty() ? 0 : slot_offsets.back(); }
  int n_slots() const { return static_cast<int>(slot_offsets.size()) - 1; }
  int64_t rows_of(int slot) const { return slot_offsets[slot + 1] - slot_offsets[slot]; }
};

// The layout fits the placement: a layer it has, one offset per slot of that layer plus one,
// starting at 0 and never decreasing. InvalidArgument naming what is wrong otherwise.
absl::Status ValidateLayout(const ExpertLayout& layout, const ExpertPlacement& placement);

// Every slot with rows is hosted by `rank` (what a worker checks of each dispatch it receives).
// FailedPrecondition naming the first slot that is not. REQUIRES: ValidateLayout passed.
absl::Status CheckSlotsHostedBy(int rank, const ExpertLayout& layout,
                                const ExpertPlacement& placement);

}  // namespace moe
