// Causal grouped-query attention against a KV cache, for prefill and decode alike: one block per
// (new row, query head); its warps split the visible keys and each keeps an online softmax (running
// max, running sum, weighted sum of values), merged at the end. Any head_dim up to kMaxHeadDim, any
// sliding window, any cache length: nothing is sized by the sequence.
//
// When there are too few (row, head) blocks to fill the GPU (decode, short chunks), the keys are
// also split across blocks (split-K, "flash-decoding"): each writes its partial max, sum and
// weighted values, and a second kernel merges them.
//
// This is the plain, bandwidth-bound form: every block reads its keys and values from global
// memory (L2 serves the other heads of a group). A tensor-core flash-attention kernel would make
// long prefills compute-bound; see the README's GPU section for what it costs today.
#include <math.h>

#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

// partial == nullptr: one block per (row, head) writes out. Else block (row, head, split) covers
// one of gridDim.z slices of the row's keys and writes [max, sum, values...] to partial.
__global__ void AttentionKernel(const float* q, const float* k_cache, const float* v_cache,
                                AttentionShape s, float scale, float* out, float* partial) {
  __shared__ float q_row[kMaxHeadDim];
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];

  const int64_t i = blockIdx.x;  // new row
  const int h = blockIdx.y;      // query head
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q_stride = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t kv_stride = static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  for (int d = threadIdx.x; d < s.head_dim; d += blockDim.x) q_row[d] = q[i * q_stride + h * s.head_dim + d];
  __syncthreads();

  const int64_t pos = s.first_pos + i;
  int64_t lo = s.window > 0 ? max(int64_t{0}, pos - s.window + 1) : int64_t{0};
  int64_t hi = pos;  // inclusive
  if (partial != nullptr) {
    const int64_t chunk = (pos - lo + gridDim.z) / gridDim.z;
    lo += blockIdx.z * chunk;
    hi = min(hi, lo + chunk - 1);
  }
  float m = -INFINITY, l = 0;
  float acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0;

  for (int64_t t = lo + warp; t <= hi; t += kWarps) {
    const float* k = k_cache + t * kv_stride + kvh * s.head_dim;
    float dot = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < s.head_dim) dot += q_row[d] * k[d];
    }
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float score = dot * scale;
    const float m_new = fmaxf(m, score);
    const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(score - m_new);
    l = l * correction + p;
    const float* v = v_cache + t * kv_stride + kvh * s.head_dim;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < s.head_dim) acc[j] = acc[j] * correction + p * v[d];
    }
    m = m_new;
  }

  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + 32 * j;
    if (d < s.head_dim) warp_acc[warp][d] = acc[j];
  }
  __syncthreads();
  // Merge the warps: a warp that saw no key has max -inf and weighs nothing.
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, warp_max[w]);
  float weight[kWarps];
  float l_all = 0;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = warp_max[w] == -INFINITY ? 0.0f : expf(warp_max[w] - m_all);
    l_all += warp_sum[w] * weight[w];
  }
  if (partial == nullptr) {
    for (int d = threadIdx.x; d < s.head_dim; d += blockDim.x) {
      float o = 0;
      for (int w = 0; w < kWarps; ++w) o += warp_acc[w][d] * weight[w];
      out[i * q_stride + h * s.head_dim + d] = o / l_all;
    }
    return;
  }
  float* part = partial + ((i * s.n_heads + h) * gridDim.z + blockIdx.z) * (s.head_dim + 2);
  if (threadIdx.x == 0) {
    part[0] = m_all;
    part[1] = l_all;
  }
  for (int d = threadIdx.x; d < s.head_dim; d += blockDim.x) {
    float o = 0;
    for (int w = 0; w < kWarps; ++w) o += warp_acc[w][d] * weight[w];
    part[2 + d] = o;
  }
}

// Block (row, head): merges its splits' partials into out.
__global__ void MergeSplitsKernel(const float* partial, int splits, AttentionShape s, float* out) {
  const int64_t i = blockIdx.x;
  const int h = blockIdx.y;
  const float* part = partial + (i * s.n_heads + h) * splits * (s.head_dim + 2);
  float m_all = -INFINITY;
  for (int z = 0; z < splits; ++z) m_all = fmaxf(m_all, part[z * (s.head_dim + 2)]);
  float l_all = 0;
  for (int z = 0; z < splits; ++z) {
    const float m = part[z * (s.head_dim + 2)];
    if (m != -INFINITY) l_all += part[z * (s.head_dim + 2) + 1] * expf(m - m_all);
  }
  const int64_t q_stride = static_cast<int64_t>(s.n_heads) * s.head_dim;
  for (int d = threadIdx.x; d < s.head_dim; d += blockDim.x) {
    float o = 0;
    for (int z = 0; z < splits; ++z) {
      const float m = part[z * (s.head_dim + 2)];
      if (m != -INFINITY) o += part[z * (s.head_dim + 2) + 2 + d] * expf(m - m_all);
    }
    out[i * q_stride + h * s.head_dim + d] = o / l_all;
  }
}

}  // namespace

int AttentionSplits(const AttentionShape& shape) {
  constexpr int64_t kEnoughBlocks = 512;   // a few per SM on the largest GPUs
  constexpr int64_t kKeysPerSplit = 128;   // below this a split is not worth its merge
  const int64_t blocks = shape.n_new * shape.n_heads;
  int64_t keys = shape.first_pos + shape.n_new;
  if (shape.window > 0) keys = std::min(keys, shape.window);
  if (blocks >= kEnoughBlocks || keys < 2 * kKeysPerSplit) return 1;
  const int64_t by_keys = keys / kKeysPerSplit;
  const int64_t by_blocks = (kEnoughBlocks + blocks - 1) / blocks;
  return static_cast<int>(std::min<int64_t>({by_keys, by_blocks, 64}));
}

cudaError_t LaunchAttention(const float* q, const float* k_cache, const float* v_cache,
                            const AttentionShape& shape, float* out, float* partial,
                            cudaStream_t stream) {
  if (shape.n_new <= 0) return cudaGetLastError();
  const int splits = AttentionSplits(shape);
  const float scale = 1.0f / sqrtf(static_cast<float>(shape.head_dim));
  const dim3 grid(static_cast<unsigned>(shape.n_new), static_cast<unsigned>(shape.n_heads),
                  static_cast<unsigned>(splits));
  AttentionKernel<<<grid, kWarps * 32, 0, stream>>>(q, k_cache, v_cache, shape, scale, out,
                                                    splits > 1 ? partial : nullptr);
  if (splits > 1) {
    const dim3 merge_grid(static_cast<unsigned>(shape.n_new), static_cast<unsigned>(shape.n_heads));
    MergeSplitsKernel<<<merge_grid, kWarps * 32, 0, stream>>>(partial, splits, shape, out);
  }
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
