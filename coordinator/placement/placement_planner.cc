#include "coordinator/placement/placement_planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/placement/placement_search.h"
#include "core/base/status_macros.h"

namespace moe {

namespace {

using placement::HeldTable;
using placement::Improve;
using placement::KeepCurrent;
using placement::LayerState;
using placement::MovedSlots;
using placement::Pack;
using placement::Relabel;
using placement::Replicate;
using placement::Tolerance;

// ----------------------------------------------------------------------------------------------
// Validation and reports.

absl::Status ValidateLoads(const std::vector<std::vector<double>>& loads) {
  if (loads.empty() || loads[0].empty())
    return absl::InvalidArgumentError("loads: no layers or no experts");
  for (size_t l = 0; l < loads.size(); ++l) {
    if (loads[l].size() != loads[0].size()) {
      return absl::InvalidArgumentError(absl::StrCat("loads: layer ", l, " has ", loads[l].size(),
                                                     " experts, layer 0 has ", loads[0].size()));
    }
    for (size_t e = 0; e < loads[l].size(); ++e) {
      if (!std::isfinite(loads[l][e]) || loads[l][e] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("loads: layer ", l, " expert ", e, " is ",
                                                       loads[l][e], " (expected a count >= 0)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSlots(const std::vector<std::vector<ExpertSlot>>& slots, int n_layers,
                           int n_experts, int n_workers, const char* what) {
  if (static_cast<int>(slots.size()) != n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", slots.size(), " layers, the loads have ", n_layers));
  }
  for (int l = 0; l < n_layers; ++l) {
    std::vector<std::vector<char>> held(n_workers, std::vector<char>(n_experts, 0));
    std::vector<char> seen(n_experts, 0);
    for (const ExpertSlot& s : slots[l]) {
      if (s.rank < 1 || s.rank > n_workers || s.expert < 0 || s.expert >= n_experts) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": layer ", l, " has a slot of expert ", s.expert, " on rank ",
                         s.rank, " (ranks 1..", n_workers, ", experts 0..", n_experts - 1, ")"));
      }
      if (held[s.rank - 1][s.expert]) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": layer ", l, " puts expert ",
                                                       s.expert, " on rank ", s.rank, " twice"));
      }
      held[s.rank - 1][s.expert] = 1;
      seen[s.expert] = 1;
    }
    for (int e = 0; e < n_experts; ++e) {
      if (!seen[e])
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": layer ", l, " has no slot for expert ", e));
    }
  }
  return absl::OkStatus();
}

LayerPlan Report(const std::vector<double>& load, std::vector<ExpertSlot> slots, int n_workers,
                 const std::vector<ExpertSlot>* current) {
  const int n_experts = static_cast<int>(load.size());
  LayerPlan p;
  std::vector<int> replicas(n_experts, 0);
  for (const ExpertSlot& s : slots) ++replicas[s.expert];
  p.worker_load.assign(n_workers, 0.0);
  for (const ExpertSlot& s : slots)
    p.worker_load[s.rank - 1] += load[s.expert] / replicas[s.expert];
  for (double x : p.worker_load) p.mean += x / n_workers;
  p.max = *std::max_element(p.worker_load.begin(), p.worker_load.end());
  p.balancedness = p.max > 0 ? p.mean / p.max : 1.0;
  p.replicas = static_cast<int>(slots.size()) - n_experts;
  if (current != nullptr && !current->empty()) {
    const auto now = HeldTable(slots, n_workers, n_experts),
               before = HeldTable(*current, n_workers, n_experts);
    for (const ExpertSlot& s : slots) p.moved_slots += !before[s.rank - 1][s.expert];
    for (int e = 0; e < n_experts; ++e) {
      bool same = true;
      for (int w = 0; w < n_workers; ++w) same = same && now[w][e] == before[w][e];
      p.moved_experts += !same;
    }
  }
  p.slots = std::move(slots);
  return p;
}

PlacementPlan Summarize(std::vector<LayerPlan> layers) {
  PlacementPlan plan;
  double means = 0.0, maxes = 0.0;
  for (const LayerPlan& l : layers) {
    means += l.mean;
    maxes += l.max;
    plan.moved_slots += l.moved_slots;
    plan.moved_experts += l.moved_experts;
  }
  plan.balancedness = maxes > 0 ? means / maxes : 1.0;
  plan.layers = std::move(layers);
  return plan;
}

// One layer: the candidates (the baseline improved and renamed; the current placement as it is
// and improved), the best max among them, then the fewest moves within keep_within of it.
std::vector<ExpertSlot> PlanLayer(const std::vector<double>& load, const PlannerOptions& o,
                                  int capacity, const std::vector<ExpertSlot>* current) {
  LayerState baseline(load, o.n_workers, capacity);
  Pack(Replicate(load, o.n_workers, capacity), &baseline);
  if (!o.improve) return baseline.Slots();
  Improve(&baseline);
  if (current == nullptr) return baseline.Slots();

  const int n_experts = static_cast<int>(load.size());
  const auto held = HeldTable(*current, o.n_workers, n_experts);
  std::vector<LayerState> candidates;
  LayerState now(load, o.n_workers, capacity);
  for (const ExpertSlot& s : *current) now.Add(s.rank - 1, s.expert);
  now.Refresh();
  bool usable = true;
  for (int w = 0; w < o.n_workers; ++w)
    usable = usable && now.count(w) >= 1 && now.count(w) <= capacity;
  if (usable) {
    candidates.push_back(now);
    Improve(&now);
    candidates.push_back(now);
  }
  candidates.push_back(Relabel(baseline, held));
  double best = std::numeric_limits<double>::infinity();
  for (const LayerState& c : candidates) best = std::min(best, c.Max());
  const double bound = best * (1.0 + o.keep_within) + Tolerance(best);
  const LayerState* chosen = nullptr;
  int chosen_moves = 0;
  for (LayerState& c : candidates) {
    if (c.Max() > bound) continue;
    KeepCurrent(held, bound, &c);
    const int moves = MovedSlots(c, held);
    if (chosen == nullptr || moves < chosen_moves ||
        (moves == chosen_moves && c.Max() < chosen->Max() - Tolerance(best))) {
      chosen = &c;
      chosen_moves = moves;
    }
  }
  MOE_CHECK(chosen != nullptr);
  return chosen->Slots();
}

}  // namespace

absl::Status PlannerOptions::Validate(int n_experts) const {
  if (n_workers < 1)
    return absl::InvalidArgumentError(absl::StrCat("workers: ", n_workers, " (need at least 1)"));
  if (n_workers > n_experts) {
    return absl::InvalidArgumentError(absl::StrCat("workers: ", n_workers, " workers for ",
                                                   n_experts,
                                                   " experts per layer: some would host nothing"));
  }
  if (slots_per_worker < 1 || static_cast<long long>(slots_per_worker) * n_workers < n_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert slots: ", slots_per_worker, " per worker x ", n_workers, " workers cannot hold ",
        n_experts, " experts (need at least ", (n_experts + n_workers - 1) / n_workers, ")"));
  }
  if (!std::isfinite(keep_within) || keep_within < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep within: ", keep_within, " (expected a fraction >= 0)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PlacementPlan> PlanPlacement(const std::vector<std::vector<double>>& loads,
                                            const PlannerOptions& options,
                                            const std::vector<std::vector<ExpertSlot>>& current) {
  MOE_RETURN_IF_ERROR(ValidateLoads(loads));
  const int n_layers = static_cast<int>(loads.size()),
            n_experts = static_cast<int>(loads[0].size());
  MOE_RETURN_IF_ERROR(options.Validate(n_experts));
  if (!current.empty()) {
    MOE_RETURN_IF_ERROR(
        ValidateSlots(current, n_layers, n_experts, options.n_workers, "current placement"));
  }
  const int capacity =
      std::min(options.slots_per_worker, n_experts);  // distinct experts per worker
  std::vector<LayerPlan> layers;
  for (int l = 0; l < n_layers; ++l) {
    const std::vector<ExpertSlot>* now = current.empty() ? nullptr : &current[l];
    layers.push_back(
        Report(loads[l], PlanLayer(loads[l], options, capacity, now), options.n_workers, now));
  }
  return Summarize(std::move(layers));
}

absl::StatusOr<PlacementPlan> EvaluatePlacement(
    const std::vector<std::vector<double>>& loads,
    const std::vector<std::vector<ExpertSlot>>& slots, int n_workers,
    const std::vector<std::vector<ExpertSlot>>& current) {
  MOE_RETURN_IF_ERROR(ValidateLoads(loads));
  const int n_layers = static_cast<int>(loads.size()),
            n_experts = static_cast<int>(loads[0].size());
  if (n_workers < 1) return absl::InvalidArgumentError("placement: need at least one worker");
  MOE_RETURN_IF_ERROR(ValidateSlots(slots, n_layers, n_experts, n_workers, "placement"));
  if (!current.empty()) {
    MOE_RETURN_IF_ERROR(
        ValidateSlots(current, n_layers, n_experts, n_workers, "current placement"));
  }
  std::vector<LayerPlan> layers;
  for (int l = 0; l < n_layers; ++l) {
    layers.push_back(
        Report(loads[l], slots[l], n_workers, current.empty() ? nullptr : &current[l]));
  }
  return Summarize(std::move(layers));
}

}  // namespace moe
