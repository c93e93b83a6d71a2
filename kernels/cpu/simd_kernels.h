// Highway SIMD inner loops, dispatched at run time to the best instruction set of the CPU
// (AVX-512 on the build machines; SSE4/AVX2/NEON/scalar elsewhere).
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace moe::kernels::simd {

// The widest batch GemvRows takes; larger batches go through the tiled GEMM.
inline constexpr int kMaxGemvRows = 4;

// For t < m (m <= kMaxGemvRows) and j in [row_begin, row_end):
//   y[t * ldy + j] = dot(x[t * w.cols .. +w.cols), row j of w), float32 accumulation.
// Reads each weight row once whatever m is: this is the memory-bound decode path.
void GemvRows(const float* x, int m, const WeightMatrix& w, int64_t row_begin, int64_t row_end,
              float* y, int64_t ldy);

// dst[n] = float32(src[n]) for src of type t.
void ConvertToF32(DType t, const void* src, int64_t n, float* dst);

// y[n] = weight[n] * x[n] / sqrt(mean(x^2) + eps); y may alias x.
void RmsNormRow(const float* x, const float* weight, int64_t n, float eps, float* y);

// out[n] = silu(gate[n]) * up[n]
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

// One query row of one head against n_keys keys: out[d] = softmax(scale * q . k_p) . v_p, with
// k_p = k + p * stride and v_p likewise (a KV cache's rows for one KV head). scores: [n_keys]
// scratch.
void AttendRow(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys,
               int64_t d, float scale, float* scores, float* out);

// Sum of x[n] with independent vector accumulators: a read-bandwidth probe for benchmarks.
float Sum(const float* x, int64_t n);

// Name of the instruction set chosen at run time (e.g. "AVX3_ZEN4").
const char* TargetName();

}  // namespace moe::kernels::simd
