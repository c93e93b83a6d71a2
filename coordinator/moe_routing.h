// The MoE block's stages on the coordinator, named as the math goes: router logits -> softmax ->
// top-k -> renormalise (RouteTopK), rows grouped by expert for dispatch (BuildExpertBatch), and the
// weighted sum of expert outputs back into the residual stream (CombineExpertOutputs).
#pragma once

#include <cstdint>
#include <vector>

#include "core/expert_exchange.h"

namespace moe {

struct Routing {
  int top_k = 0;
  std::vector<int32_t> expert;  // [n_tokens, top_k], by falling probability
  std::vector<float> weight;    // [n_tokens, top_k], renormalised to sum to 1 per token
};

// logits: [n_tokens, n_experts]. Softmax over all experts, keep the top_k, renormalise (as HF's
// MixtralSparseMoeBlock). Equal probabilities rank the lower expert index first.
Routing RouteTopK(const float* logits, int64_t n_tokens, int n_experts, int top_k);

// The dispatch plan: expert_offsets [n_experts + 1] of the grouped batch; slot[t * top_k + j] is
// the batch row of token t's j-th choice and source_row[row] the token a batch row copies.
void PlanExpertBatch(const Routing& routing, int64_t n_tokens, int n_experts,
                     std::vector<int64_t>* expert_offsets, std::vector<int64_t>* slot,
                     std::vector<int64_t>* source_row);

// Packs x's rows ([n_tokens, hidden]) grouped by expert into batch, once per (token, choice);
// slot[t * top_k + j] is the batch row of token t's j-th choice.
void BuildExpertBatch(const Routing& routing, const float* x, int64_t n_tokens, int64_t hidden,
                      int n_experts, int layer, ExpertBatch* batch, std::vector<int64_t>* slot);

// residual[t] += sum_j weight[t, j] * expert_out[slot[t, j]], summed in ascending expert order
// like HF's index_add_ loop so float32 rounding matches. expert_out: [n_rows, hidden].
void CombineExpertOutputs(const Routing& routing, const std::vector<int64_t>& slot,
                          const float* expert_out, int64_t n_tokens, int64_t hidden,
                          float* residual);

}  // namespace moe
