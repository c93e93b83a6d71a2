// Row-wise and element-wise kernels: embedding lookup, rounding for the 16-bit GEMMs, RMSNorm,
// RoPE, SwiGLU's activation, the residual add. All memory-bound; one pass over their data.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_kernels.h"

namespace moe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

__device__ float ToF32(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__global__ void EmbedKernel(DType dtype, const void* table, int64_t hidden, const int32_t* tokens,
                            float* out) {
  const int64_t row = blockIdx.x;
  const int64_t base = static_cast<int64_t>(tokens[row]) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    out[row * hidden + c] = ToF32(dtype, table, base + c);
  }
}

__global__ void RoundTo16Kernel(bool bf16, const float* src, int64_t n, void* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    if (bf16) {
      static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
    } else {
      static_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
    }
  }
}

// Sum over the block; every thread gets the total. shared: blockDim.x / 32 floats.
__device__ float BlockSum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  __syncthreads();  // shared may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < n_warps; ++w) total += shared[w];
  return total;
}

__global__ void RmsNormKernel(const float* x, const float* weight, int64_t n, float eps, float* y) {
  __shared__ float shared[kThreads / 32];
  const float* xr = x + blockIdx.x * n;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) ss += xr[c] * xr[c];
  ss = BlockSum(ss, shared);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  float* yr = y + blockIdx.x * n;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) yr[c] = weight[c] * (xr[c] * inv);
}

// One thread per (row, head, d < head_dim / 2): rotate-half, HF's float32 angles.
__global__ void RopeKernel(float* x, const int32_t* positions, int64_t m, int n_heads,
                           int head_dim, float rope_theta) {
  const int half = head_dim / 2;
  const int64_t total = m * n_heads * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int d = static_cast<int>(i % half);
    const int64_t row_head = i / half;
    const int64_t row = row_head / n_heads;
    float* v = x + row_head * head_dim;
    const float inv_freq =
        1.0f / powf(rope_theta, static_cast<float>(2 * d) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(positions[row]) * inv_freq;
    const float c = cosf(angle), s = sinf(angle);
    const float a = v[d], b = v[d + half];
    v[d] = a * c - b * s;
    v[d + half] = b * c + a * s;
  }
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

}  // namespace

cudaError_t LaunchEmbed(DType dtype, const void* table, int64_t hidden, const int32_t* tokens,
                        int64_t n, float* out, cudaStream_t stream) {
  if (n > 0) EmbedKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(dtype, table, hidden, tokens, out);
  return cudaGetLastError();
}

cudaError_t LaunchRoundTo16(DType dtype, const float* src, int64_t n, void* dst, cudaStream_t stream) {
  if (n > 0) RoundTo16Kernel<<<Blocks(n), kThreads, 0, stream>>>(dtype == DType::kBF16, src, n, dst);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps,
                          float* y, cudaStream_t stream) {
  if (m > 0) RmsNormKernel<<<static_cast<unsigned>(m), kThreads, 0, stream>>>(x, weight, n, eps, y);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
                       float rope_theta, cudaStream_t stream) {
  const int64_t total = m * n_heads * (head_dim / 2);
  if (total > 0) {
    RopeKernel<<<Blocks(total), kThreads, 0, stream>>>(x, positions, m, n_heads, head_dim, rope_theta);
  }
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream) {
  if (n > 0) SiluMulKernel<<<Blocks(n), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) AddKernel<<<Blocks(n), kThreads, 0, stream>>>(y, x, n);
  return cudaGetLastError();
}

}  // namespace moe::kernels::cuda
