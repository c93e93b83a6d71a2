// The MoE block's dispatch plan on the coordinator: each routed choice (token, j-th expert) is
// mapped to a physical expert slot and a row of the batch sent to the experts, rows grouped by
// slot. The math itself (router top-k, gather, weighted combine) runs on the kernels::Backend.
#pragma once

#include <cstdint>
#include <vector>

#include "core/expert_layout.h"
#include "core/expert_placement.h"

namespace moe {

// One layer's routing, as the router left it.
struct Routing {
  int top_k = 0;
  std::vector<int32_t> expert;  // [n_tokens, top_k] logical experts, by falling probability
  std::vector<float> weight;    // [n_tokens, top_k], renormalised to sum to 1 per token
};

// Where each routed choice goes. Reused across steps so decoding does not allocate.
struct DispatchPlan {
  ExpertLayout layout;                  // the batch's rows, grouped by slot
  std::vector<int32_t> slot_of_choice;  // [n_tokens * top_k] the slot serving each choice
  std::vector<int64_t> row_of_choice;   // [n_tokens * top_k] that choice's row in the batch
  std::vector<int64_t> source_token;    // [n_tokens * top_k] the token each batch row copies
};

// Plans `layer`'s dispatch: each choice to one slot holding its expert (placement.replicas),
// rows grouped by slot in slot order and, within a slot, in token order, so the batch (and so
// every expert's product) is the same whatever else is in the step.
void PlanDispatch(const Routing& routing, int64_t n_tokens, const ExpertPlacement& placement,
                  int layer, int64_t hidden, DispatchPlan* plan);

}  // namespace moe
