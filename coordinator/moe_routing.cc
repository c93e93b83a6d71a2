#include "coordinator/moe_routing.h"

#include "kernels/ops.h"

namespace moe {

Routing RouteTopK(const float* logits, int64_t n_tokens, int n_experts, int top_k) {
  Routing r;
  r.top_k = top_k;
  r.expert.resize(static_cast<size_t>(n_tokens * top_k));
  r.weight.resize(static_cast<size_t>(n_tokens * top_k));
  kernels::reference::RouteTopK(logits, n_tokens, n_experts, top_k, r.expert.data(),
                                r.weight.data());
  return r;
}

void PlanExpertBatch(const Routing& routing, int64_t n_tokens, int n_experts,
                     std::vector<int64_t>* expert_offsets, std::vector<int64_t>* slot,
                     std::vector<int64_t>* source_row) {
  const int k = routing.top_k;
  expert_offsets->assign(static_cast<size_t>(n_experts) + 1, 0);
  for (int32_t e : routing.expert) ++(*expert_offsets)[e + 1];
  for (int e = 0; e < n_experts; ++e) (*expert_offsets)[e + 1] += (*expert_offsets)[e];
  std::vector<int64_t> cursor(expert_offsets->begin(), expert_offsets->end() - 1);
  slot->resize(static_cast<size_t>(n_tokens * k));
  source_row->resize(static_cast<size_t>(n_tokens * k));
  // Token order within each expert keeps the batch deterministic.
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      const int64_t row = cursor[routing.expert[t * k + j]]++;
      (*slot)[t * k + j] = row;
      (*source_row)[row] = t;
    }
  }
}

void BuildExpertBatch(const Routing& routing, const float* x, int64_t n_tokens, int64_t hidden,
                      int n_experts, int layer, ExpertBatch* batch, std::vector<int64_t>* slot) {
  std::vector<int64_t> source_row;
  PlanExpertBatch(routing, n_tokens, n_experts, &batch->expert_offsets, slot, &source_row);
  batch->layer = layer;
  batch->hidden = hidden;
  batch->rows.resize(static_cast<size_t>(n_tokens * routing.top_k * hidden));
  kernels::reference::GatherRows(x, source_row.data(), static_cast<int64_t>(source_row.size()),
                                 hidden, batch->rows.data());
}

void CombineExpertOutputs(const Routing& routing, const std::vector<int64_t>& slot,
                          const float* expert_out, int64_t n_tokens, int64_t hidden,
                          float* residual) {
  kernels::reference::CombineRows(expert_out, slot.data(), routing.expert.data(),
                                  routing.weight.data(), n_tokens, routing.top_k, hidden, residual);
}

}  // namespace moe
