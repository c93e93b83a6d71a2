// The MoE block's routing on the GPU: softmax/top-k/renormalise per token, the permute of rows
// into expert order before the experts, and the weighted unpermute back into the residual after.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per token; the experts fit in registers (n_experts <= kMaxExperts).
__global__ void RouteTopKKernel(const float* logits, int64_t n, int n_experts, int top_k,
                                int32_t* experts, float* weights) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= n) return;
  float p[kMaxExperts];
  const float* row = logits + t * n_experts;
  float mx = -INFINITY;
  for (int e = 0; e < n_experts; ++e) mx = fmaxf(mx, row[e]);
  double sum = 0;  // as the CPU reference
  for (int e = 0; e < n_experts; ++e) {
    p[e] = expf(row[e] - mx);
    sum += p[e];
  }
  for (int e = 0; e < n_experts; ++e) p[e] = static_cast<float>(p[e] / sum);
  // Top-k by repeated selection: strictly greater wins, so ties keep the lower index.
  unsigned long long taken = 0;
  int chosen[kMaxTopK];
  float chosen_sum = 0;
  for (int j = 0; j < top_k; ++j) {
    int best = -1;
    for (int e = 0; e < n_experts; ++e) {
      if ((taken >> e) & 1ull) continue;
      if (best < 0 || p[e] > p[best]) best = e;
    }
    taken |= 1ull << best;
    chosen[j] = best;
    chosen_sum += p[best];
  }
  for (int j = 0; j < top_k; ++j) {
    experts[t * top_k + j] = chosen[j];
    weights[t * top_k + j] = p[chosen[j]] / chosen_sum;
  }
}

__global__ void GatherRowsKernel(const float* x, const int64_t* source_row, int64_t hidden,
                                 float* out) {
  const int64_t r = blockIdx.x;
  const float* src = x + source_row[r] * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) out[r * hidden + c] = src[c];
}

// One block per token. The choices are summed in ascending expert order with separate multiply
// and add (no fused multiply-add), exactly as the CPU does, so both backends combine alike.
__global__ void CombineRowsKernel(const float* expert_out, const int64_t* slot,
                                  const int32_t* experts, const float* weights, int top_k,
                                  int64_t hidden, float* residual) {
  const int64_t t = blockIdx.x;
  int order[kMaxTopK];
  for (int j = 0; j < top_k; ++j) order[j] = j;
  for (int a = 1; a < top_k; ++a) {  // insertion sort by expert: stable, as std::sort on distinct keys
    const int v = order[a];
    int b = a - 1;
    while (b >= 0 && experts[t * top_k + order[b]] > experts[t * top_k + v]) {
      order[b + 1] = order[b];
      --b;
    }
    order[b + 1] = v;
  }
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float sum = 0;
    for (int j = 0; j < top_k; ++j) {
      const int choice = order[j];
      const float y = expert_out[slot[t * top_k + choice] * hidden + c];
      sum = __fadd_rn(sum, __fmul_rn(y, weights[t * top_k + choice]));
    }
    residual[t * hidden + c] += sum;
  }
}

}  // namespace

cudaError_t LaunchRouteTopK(const float* logits, int64_t n, int n_experts, int top_k,
                            int32_t* experts, float* weights, cudaStream_t stream) {
  if (n > 0) {
    const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
    RouteTopKKernel<<<blocks, kThreads, 0, stream>>>(logits, n, n_experts, top_k, experts, weights);
  }
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* x, const int64_t* source_row, int64_t n_rows,
                             int64_t hidden, float* out, cudaStream_t stream) {
  if (n_rows > 0) {
    GatherRowsKernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(x, source_row, hidden, out);
  }
  return cudaGetLastError();
}

cudaError_t LaunchCombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                              const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                              float* residual, cudaStream_t stream) {
  if (n_tokens > 0) {
    CombineRowsKernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream>>>(
        expert_out, slot, experts, weights, top_k, hidden, residual);
  }
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
