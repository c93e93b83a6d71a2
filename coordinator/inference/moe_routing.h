// The MoE block's dispatch plan on the coordinator: each routed choice (token, j-th expert) is
// mapped to a physical expert slot and a row of the batch sent to the experts, rows grouped by
// slot. The math itself (router top-k, gather, weighted combine) runs on the kernels::Backend.
#pragma once

#include <cstdint>
#include <vector>

#include "core/placement/expert_layout.h"
#include "core/placement/expert_placement.h"

namespace moe {

// One layer's routing, as the router left it.
struct Routing {
  int top_k = 0;
  std::vector<int32_t> expert;  // [n_tokens, top_k] logical experts, by falling probability
  std::vector<float> weight;    // [n_tokens, top_k], renormalised to sum to 1 per token
  std::vector<float> logits;    // [n_tokens, n_experts] raw router logits, for observers that ask
                              // (the routing trace's entropy); empty where nobody filled them
};

// Where each routed choice goes. Reused across steps so decoding does not allocate.
struct DispatchPlan {
  ExpertLayout layout;                  // the batch's rows, grouped by slot
  std::vector<int32_t> slot_of_choice;  // [n_tokens * top_k] the slot serving each choice
  std::vector<int64_t> row_of_choice;   // [n_tokens * top_k] that choice's row in the batch
  std::vector<int64_t> source_token;    // [n_tokens * top_k] the token each batch row copies
  std::vector<int64_t> rank_load;       // [W + 1] rows given to each rank (by rank; 0: in-process)

  // Scratch of PlanDispatch.
  std::vector<int64_t> expert_offsets;     // [n_experts + 1] choices bucketed by expert
  std::vector<int64_t> choices_by_expert;  // [n_tokens * top_k] choice indices, by expert
  std::vector<int64_t> cursor;             // [max(n_experts, n_slots)]
};

// Plans `layer`'s dispatch: each choice (token t, j-th expert; choice t * top_k + j) to one slot
// holding its expert (placement.replicas), by the split rule: first every choice of an expert
// with one slot goes to it; then, for each replicated expert in expert order, its choices in
// token order go one at a time to the replica whose rank has the fewest rows so far (ties: the
// lowest slot number), which gains the row. Deterministic (a planner's predictions replay it)
// and O(choices x replicas). Rows are grouped by slot in slot order and, within a slot, in token
// order, so each slot's batch depends only on the routing and the placement.
void PlanDispatch(const Routing& routing, int64_t n_tokens, const ExpertPlacement& placement,
                  int layer, int64_t hidden, DispatchPlan* plan);

}  // namespace moe
