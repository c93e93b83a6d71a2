#include "coordinator/inference/moe_routing.h"

namespace moe {

void PlanDispatch(const Routing& routing, int64_t n_tokens, const ExpertPlacement& placement,
                  int layer, int64_t hidden, DispatchPlan* plan) {
  const int64_t n_choices = n_tokens * routing.top_k;
  const int n_slots = placement.n_slots(layer);
  const int n_experts = placement.n_experts();
  const std::vector<ExpertSlot>& slots = placement.slots(layer);

  // The choices bucketed by expert, each bucket in token order (a stable counting sort), so a
  // replicated expert's choices are visited in token order without scanning the others'.
  std::vector<int64_t>& expert_offsets = plan->expert_offsets;
  expert_offsets.assign(static_cast<size_t>(n_experts) + 1, 0);
  for (int64_t i = 0; i < n_choices; ++i) ++expert_offsets[routing.expert[i] + 1];
  for (int e = 0; e < n_experts; ++e) expert_offsets[e + 1] += expert_offsets[e];
  plan->choices_by_expert.resize(static_cast<size_t>(n_choices));
  plan->cursor.assign(expert_offsets.begin(), expert_offsets.end() - 1);
  for (int64_t i = 0; i < n_choices; ++i) {
    plan->choices_by_expert[plan->cursor[routing.expert[i]]++] = i;
  }

  // The split rule. First every choice of an expert with one slot goes there; then each
  // replicated expert in expert order hands its choices out one at a time, in token order, to the
  // replica whose rank has the fewest rows so far (ties: the lowest slot). Deterministic, so a
  // planner can replay it.
  plan->slot_of_choice.resize(static_cast<size_t>(n_choices));
  std::vector<int64_t>& load = plan->rank_load;
  load.assign(static_cast<size_t>(placement.n_workers()) + 1, 0);
  for (int e = 0; e < n_experts; ++e) {
    const std::vector<int>& replicas = placement.replicas(layer, e);
    if (replicas.size() != 1) continue;
    const int slot = replicas.front();
    for (int64_t at = expert_offsets[e]; at < expert_offsets[e + 1]; ++at) {
      plan->slot_of_choice[plan->choices_by_expert[at]] = slot;
    }
    load[slots[slot].rank] += expert_offsets[e + 1] - expert_offsets[e];
  }
  for (int e = 0; e < n_experts; ++e) {
    const std::vector<int>& replicas = placement.replicas(layer, e);
    if (replicas.size() == 1) continue;
    for (int64_t at = expert_offsets[e]; at < expert_offsets[e + 1]; ++at) {
      int best = replicas.front();
      for (int s : replicas) {  // ascending slots: a strict < keeps the lowest on ties
        if (load[slots[s].rank] < load[slots[best].rank]) best = s;
      }
      plan->slot_of_choice[plan->choices_by_expert[at]] = best;
      ++load[slots[best].rank];
    }
  }

  // A counting sort of the choices by slot; choices are visited in token order.
  ExpertLayout& layout = plan->layout;
  layout.layer = layer;
  layout.hidden = hidden;
  layout.slot_offsets.assign(static_cast<size_t>(n_slots) + 1, 0);
  for (int32_t s : plan->slot_of_choice) ++layout.slot_offsets[s + 1];
  for (int s = 0; s < n_slots; ++s) layout.slot_offsets[s + 1] += layout.slot_offsets[s];
  plan->row_of_choice.resize(static_cast<size_t>(n_choices));
  plan->source_token.resize(static_cast<size_t>(n_choices));
  plan->cursor.assign(layout.slot_offsets.begin(), layout.slot_offsets.end() - 1);
  for (int64_t i = 0; i < n_choices; ++i) {
    const int64_t row = plan->cursor[plan->slot_of_choice[i]]++;
    plan->row_of_choice[i] = row;
    plan->source_token[row] = i / routing.top_k;
  }
}

}  // namespace moe
