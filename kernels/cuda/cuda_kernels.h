// The CUDA kernels, as launchers on device pointers and a stream. Each returns cudaGetLastError()
// after its launch, so the caller checks every launch (MOE_CUDA_STATUS) with its own file:line.
// Contracts are those of the same-named ops in kernels/backend.h and kernels/ops.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/ops.h"

namespace moe::kernels::cuda {

// Limits of the kernels' register arrays; the backend rejects models beyond them up front.
inline constexpr int kMaxHeadDim = 256;
inline constexpr int kMaxExperts = 64;
inline constexpr int kMaxTopK = 8;
// Sampling candidates per row the GPU selects (one pass over the row per candidate).
inline constexpr int kMaxSampleCandidates = 1024;

cudaError_t LaunchEmbed(DType dtype, const void* table, int64_t hidden, const int32_t* tokens,
                        int64_t n, float* out, cudaStream_t stream);
// dst[n] = round(src[n]) to bf16 or f16 (dtype), for the 16-bit GEMMs.
cudaError_t LaunchRoundTo16(DType dtype, const float* src, int64_t n, void* dst, cudaStream_t stream);
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps,
                          float* y, cudaStream_t stream);
cudaError_t LaunchRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
                       float rope_theta, cudaStream_t stream);
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream);
cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream);
// How many blocks split each (row, head)'s keys; partial must then hold
// n_new * n_heads * splits * (head_dim + 2) floats (unused when splits is 1).
int AttentionSplits(const AttentionShape& shape);
cudaError_t LaunchAttention(const float* q, const float* k_cache, const float* v_cache,
                            const AttentionShape& shape, float* out, float* partial,
                            cudaStream_t stream);
cudaError_t LaunchRouteTopK(const float* logits, int64_t n, int n_experts, int top_k,
                            int32_t* experts, float* weights, cudaStream_t stream);
cudaError_t LaunchGatherRows(const float* x, const int64_t* source_row, int64_t n_rows,
                             int64_t hidden, float* out, cudaStream_t stream);
cudaError_t LaunchCombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                              const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                              float* residual, cudaStream_t stream);

cudaError_t LaunchTopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values,
                       int32_t* ids, int32_t* all_finite, cudaStream_t stream);

}  // namespace moe::kernels::cuda
