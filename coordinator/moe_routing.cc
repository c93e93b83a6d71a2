#include "coordinator/moe_routing.h"

namespace moe {
namespace {

// The slot serving one routed choice, among the slots holding its expert. Every expert has one
// slot today; a rule that spreads a hot expert's rows over its replicas (by load) goes here.
int ChooseReplica(const std::vector<int>& replicas) { return replicas.front(); }

}  // namespace

void PlanDispatch(const Routing& routing, int64_t n_tokens, const ExpertPlacement& placement,
                  int layer, int64_t hidden, DispatchPlan* plan) {
  const int64_t n_choices = n_tokens * routing.top_k;
  const int n_slots = placement.n_slots(layer);
  plan->slot_of_choice.resize(static_cast<size_t>(n_choices));
  for (int64_t i = 0; i < n_choices; ++i) {
    plan->slot_of_choice[i] = ChooseReplica(placement.replicas(layer, routing.expert[i]));
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
  std::vector<int64_t> cursor(layout.slot_offsets.begin(), layout.slot_offsets.end() - 1);
  for (int64_t i = 0; i < n_choices; ++i) {
    const int64_t row = cursor[plan->slot_of_choice[i]]++;
    plan->row_of_choice[i] = row;
    plan->source_token[row] = i / routing.top_k;
  }
}

}  // namespace moe
