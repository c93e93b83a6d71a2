// The GPU's part of sampling: per row of logits, the k best candidates in the sampler's order, so
// only k values and ids per sequence cross to the host instead of the whole vocabulary. The host
// then draws from them exactly as from the full row (coordinator/inference/sampler.h).
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

struct Candidate {
  float key;  // the logit, NaN ranked as -inf
  int id;     // -1: none
};

// The sampler's order: larger first, ties to the lower id; "none" after everything.
__device__ __forceinline__ bool Before(Candidate a, Candidate b) {
  if (b.id < 0) return a.id >= 0;
  if (a.id < 0) return false;
  return a.key > b.key || (a.key == b.key && a.id < b.id);
}

__device__ __forceinline__ Candidate Better(Candidate a, Candidate b) { return Before(b, a) ? b : a; }

__device__ __forceinline__ Candidate WarpBest(Candidate c) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    Candidate o;
    o.key = __shfl_down_sync(0xffffffffu, c.key, offset);
    o.id = __shfl_down_sync(0xffffffffu, c.id, offset);
    c = Better(c, o);
  }
  return c;
}

// One block per row, k rounds: round r finds the best candidate ordered after round r-1's, so no
// scratch is needed and ties resolve exactly as the CPU's sort. A row (128 KB for 32000 words)
// stays in L2 across rounds; k is small (the sampler's top_k, or 1 for greedy).
__global__ void TopKKernel(const float* logits, int64_t vocab, int k, float* values, int32_t* ids,
                           int32_t* all_finite) {
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  __shared__ Candidate warp_best[kWarps];
  __shared__ Candidate previous;
  __shared__ int nonfinite;
  if (threadIdx.x == 0) nonfinite = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (!isfinite(x[i])) nonfinite = 1;  // benign race: every writer writes 1
  }
  for (int r = 0; r < k; ++r) {
    Candidate best{-INFINITY, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i];
      const Candidate c{isnan(v) ? -INFINITY : v, static_cast<int>(i)};
      if (r > 0 && !Before(previous, c)) continue;  // already taken
      best = Better(best, c);
    }
    best = WarpBest(best);
    if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
    __syncthreads();
    if (threadIdx.x < 32) {
      best = threadIdx.x < kWarps ? warp_best[threadIdx.x] : Candidate{-INFINITY, -1};
      best = WarpBest(best);
      if (threadIdx.x == 0) {
        values[row * k + r] = best.id >= 0 ? x[best.id] : -INFINITY;
        ids[row * k + r] = best.id;
        previous = best;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) all_finite[row] = nonfinite ? 0 : 1;
}

}  // namespace

cudaError_t LaunchTopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values,
                       int32_t* ids, int32_t* all_finite, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  TopKKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, k, values, ids,
                                                                   all_finite);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
