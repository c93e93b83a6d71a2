#include "coordinator/moe_routing.h"

#include <algorithm>
#include <numeric>

#include "kernels/ops.h"

namespace moe {

Routing RouteTopK(const float* logits, int64_t n_tokens, int n_experts, int top_k) {
  Routing r;
  r.top_k = top_k;
  r.expert.resize(static_cast<size_t>(n_tokens * top_k));
  r.weight.resize(static_cast<size_t>(n_tokens * top_k));
  std::vector<float> p(static_cast<size_t>(n_experts));
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::copy(logits + t * n_experts, logits + (t + 1) * n_experts, p.begin());
    kernels::Softmax(p.data(), n_experts);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t a, int32_t b) {
      return p[a] > p[b] || (p[a] == p[b] && a < b);
    });
    float sum = 0;
    for (int j = 0; j < top_k; ++j) sum += p[order[j]];
    for (int j = 0; j < top_k; ++j) {
      r.expert[t * top_k + j] = order[j];
      r.weight[t * top_k + j] = p[order[j]] / sum;
    }
  }
  return r;
}

void BuildExpertBatch(const Routing& routing, const float* x, int64_t n_tokens, int64_t hidden,
                      int n_experts, int layer, ExpertBatch* batch, std::vector<int64_t>* slot) {
  const int k = routing.top_k;
  batch->layer = layer;
  batch->hidden = hidden;
  batch->expert_offsets.assign(static_cast<size_t>(n_experts) + 1, 0);
  for (int32_t e : routing.expert) ++batch->expert_offsets[e + 1];
  for (int e = 0; e < n_experts; ++e) batch->expert_offsets[e + 1] += batch->expert_offsets[e];
  std::vector<int64_t> cursor(batch->expert_offsets.begin(), batch->expert_offsets.end() - 1);
  batch->rows.resize(static_cast<size_t>(n_tokens * k * hidden));
  slot->resize(static_cast<size_t>(n_tokens * k));
  // Token order within each expert keeps the batch deterministic.
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      const int64_t row = cursor[routing.expert[t * k + j]]++;
      (*slot)[t * k + j] = row;
      std::copy(x + t * hidden, x + (t + 1) * hidden, batch->rows.begin() + row * hidden);
    }
  }
}

void CombineExpertOutputs(const Routing& routing, const std::vector<int64_t>& slot,
                          const float* expert_out, int64_t n_tokens, int64_t hidden,
                          float* residual) {
  const int k = routing.top_k;
  std::vector<float> moe_out(static_cast<size_t>(hidden));
  std::vector<int> choices(static_cast<size_t>(k));
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::iota(choices.begin(), choices.end(), 0);
    std::sort(choices.begin(), choices.end(), [&](int a, int b) {
      return routing.expert[t * k + a] < routing.expert[t * k + b];
    });
    std::fill(moe_out.begin(), moe_out.end(), 0.0f);
    for (int j : choices) {
      const float w = routing.weight[t * k + j];
      const float* y = expert_out + slot[t * k + j] * hidden;
      for (int64_t c = 0; c < hidden; ++c) moe_out[c] += y[c] * w;
    }
    float* h = residual + t * hidden;
    for (int64_t c = 0; c < hidden; ++c) h[c] += moe_out[c];
  }
}

}  // namespace moe
