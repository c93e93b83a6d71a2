#include "core/exchange/step_messages.h"

#include <climits>

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status CheckStepHeader(const StepHeader& h, int64_t last_step_id) {
  if (h.magic != kStepMagic || h.step_id <= last_step_id) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected step header (magic ", h.magic,
                                                   ", step ", h.step_id, " after ", last_step_id,
                                                   ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckForwardHeader(const StepHeader& h, const ExpertPlacement& placement, int n_layers,
                                int64_t hidden) {
  // Rows x width in one MPI message (an int), checked by division: the product may overflow.
  const bool fits = h.command == static_cast<int32_t>(StepCommand::kForward) && h.layer >= 0 &&
                    h.layer < n_layers && h.layer < placement.n_layers() &&
                    h.n_slots == placement.n_slots(h.layer) && h.hidden == hidden && h.hidden > 0 &&
                    h.n_rows >= 0 && h.n_rows <= INT_MAX / h.hidden && h.micro_batch < 2;
  if (!fits) {
    return absl::InvalidArgumentError(
        absl::StrCat("step ", h.step_id, " header does not fit this model (command ", h.command,
                     ", layer ", h.layer, ", slots ", h.n_slots, ", hidden ", h.hidden, ", rows ",
                     h.n_rows, ", micro-batch ", h.micro_batch, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExpertLayout> ForwardLayout(const StepHeader& h, absl::Span<const int64_t> counts,
                                           absl::Span<const int32_t> ids,
                                           const ExpertPlacement& placement, int rank) {
  if (static_cast<int64_t>(counts.size()) != h.n_slots ||
      static_cast<int64_t>(ids.size()) != h.n_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("step ", h.step_id, " carries ", counts.size(), " counts and ", ids.size(),
                     " ids; the header says ", h.n_slots, " and ", h.n_rows));
  }
  ExpertLayout layout;
  layout.layer = h.layer;
  layout.hidden = h.hidden;
  layout.slot_offsets.assign(counts.size() + 1, 0);
  for (size_t s = 0; s < counts.size(); ++s) {
    // Each count within the header's rows before adding: the sum cannot overflow.
    if (counts[s] < 0 || counts[s] > h.n_rows - layout.slot_offsets[s]) {
      return absl::InvalidArgumentError(absl::StrCat("step ", h.step_id, " gives slot ", s, " ",
                                                     counts[s], " rows; the header's ", h.n_rows,
                                                     " rows cannot hold them"));
    }
    layout.slot_offsets[s + 1] = layout.slot_offsets[s] + counts[s];
  }
  if (layout.n_rows() != h.n_rows) {
    return absl::InvalidArgumentError(absl::StrCat("step ", h.step_id, " counts add up to ",
                                                   layout.n_rows(), " rows, header says ",
                                                   h.n_rows));
  }
  absl::Status fits = ValidateLayout(layout, placement);
  if (fits.ok()) fits = CheckSlotsHostedBy(rank, layout, placement);
  if (!fits.ok())
    return absl::Status(fits.code(), absl::StrCat("step ", h.step_id, ": ", fits.message()));
  for (int s = 0; s < layout.n_slots(); ++s) {
    for (int64_t i = layout.slot_offsets[s]; i < layout.slot_offsets[s + 1]; ++i) {
      if (ids[i] != s) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step ", h.step_id, " row ", i, " is labelled slot ", ids[i], ", expected ", s));
      }
    }
  }
  return layout;
}

std::vector<int32_t> EncodeSlotTable(const ExpertPlacement& p) {
  std::vector<int32_t> out{p.n_layers()};
  for (int l = 0; l < p.n_layers(); ++l) {
    out.push_back(p.n_slots(l));
    for (const ExpertSlot& slot : p.slots(l)) {
      out.push_back(slot.rank);
      out.push_back(slot.expert);
    }
  }
  return out;
}

absl::StatusOr<ExpertPlacement> DecodeSlotTable(absl::Span<const int32_t> in, int n_layers,
                                                int n_experts, int n_workers) {
  size_t at = 0;
  auto next = [&](int32_t* v) {
    if (at >= in.size()) return false;
    *v = in[at++];
    return true;
  };
  int32_t layers = 0;
  if (!next(&layers) || layers != n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot table for ", layers, " layers; the model has ", n_layers));
  }
  const int64_t max_slots = int64_t{n_experts} * n_workers;
  std::vector<std::vector<ExpertSlot>> slots(static_cast<size_t>(n_layers));
  for (auto& layer : slots) {
    int32_t n = 0;
    // Bounded by what is left of the table too: a hostile count allocates nothing.
    if (!next(&n) || n < 0 || n > max_slots || static_cast<size_t>(n) * 2 > in.size() - at) {
      return absl::InvalidArgumentError("slot table with an impossible slot count");
    }
    layer.resize(static_cast<size_t>(n));
    for (ExpertSlot& slot : layer) {
      next(&slot.rank);
      next(&slot.expert);
    }
  }
  if (at != in.size()) return absl::InvalidArgumentError("slot table longer than its counts");
  return ExpertPlacement::FromSlots(std::move(slots), n_experts, n_workers);
}

}  // namespace moe
