#include "core/placement/expert_layout.h"

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status ValidateLayout(const ExpertLayout& layout, const ExpertPlacement& placement) {
  if (layout.layer < 0 || layout.layer >= placement.n_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("expert layout for layer ", layout.layer,
                                                   " of a ", placement.n_layers(),
                                                   "-layer placement"));
  }
  if (layout.n_slots() != placement.n_slots(layout.layer)) {
    return absl::InvalidArgumentError(absl::StrCat("expert layout names ", layout.n_slots(),
                                                   " slots; layer ", layout.layer, " has ",
                                                   placement.n_slots(layout.layer)));
  }
  if (layout.slot_offsets.front() != 0) {
    return absl::InvalidArgumentError("expert layout offsets do not start at 0");
  }
  for (int s = 0; s < layout.n_slots(); ++s) {
    if (layout.rows_of(s) < 0) {
      return absl::InvalidArgumentError(absl::StrCat("expert layout offsets decrease at slot ", s));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSlotsHostedBy(int rank, const ExpertLayout& layout,
                                const ExpertPlacement& placement) {
  const std::vector<ExpertSlot>& slots = placement.slots(layout.layer);
  for (int s = 0; s < layout.n_slots(); ++s) {
    if (layout.rows_of(s) > 0 && slots[s].rank != rank) {
      return absl::FailedPreconditionError(absl::StrCat(
          layout.rows_of(s), " rows for layer ", layout.layer, " slot ", s, " (expert ",
          slots[s].expert, "), which rank ", slots[s].rank, " hosts, not rank ", rank));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
