// The math of the model as free functions on float32 activations: one declaration per op, a plain
// reference in moe::kernels::reference and the fast CPU version in moe::kernels. Knows nothing of
// models, requests or transports.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace moe::kernels {

// How a weight matrix's elements lie in memory.
enum class WeightLayout : uint8_t {
  kRowMajor,   // [rows, cols], as the checkpoint stores it
  kCpuPanels,  // column panels for the CPU's register-blocked kernels (kernels/cpu/packed_matmul.h,
               // and kernels/cpu/quant_matmul.h for the quantized formats, scales inside)
};

// A weight matrix in nn.Linear's orientation: [rows = out, cols = in].
struct WeightMatrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRowMajor;
  // Row-major quantized formats only (kernels/quant.h): kI8 float32 [rows]; kQ4 F16 [rows, groups].
  const void* scales = nullptr;
  const void* mins = nullptr;  // kQ4: F16 [rows, groups]
};

// Causal grouped-query attention of one sequence's new rows against its KV cache.
struct AttentionShape {
  int64_t n_new = 0;        // rows of q, at positions first_pos .. first_pos + n_new - 1
  int64_t first_pos = 0;    // position of the first new row; the cache holds first_pos + n_new rows
  int n_heads = 0;          // query heads
  int n_kv_heads = 0;       // key/value heads; query head h reads kv head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int64_t window = 0;       // 0: full causal; else query at p sees keys p-window+1 .. p
};

// How a product with 16-bit weights treats the float32 activations.
enum class MatMulNumerics : uint8_t {
  // BF16 weights multiply x rounded to BF16 (round to nearest even, once per call) with the CPU's
  // BF16 dot-product instruction, as llama.cpp and GPU engines do; needs AVX512_BF16 and packed
  // weights, and is the float32 path otherwise. F16 and F32 weights always take the float32 path.
  kRoundActivations,
  // Every product is the float32 product of the exactly widened weight and the float32 x.
  kFloat32,
};

// y[m, w.rows] = x[m, w.cols] @ w^T, accumulated in float32. Packed weights (kCpuPanels) run the
// register-blocked kernels, whose rows never depend on m or on each other (batch invariance);
// row-major weights run the fallback for CPUs without AVX-512: a GEMV for m <= 4 (and for every m
// on matrices of at most 256 rows, the router's, which so stay batch invariant), widened tiles
// and OpenBLAS above, always float32 products. Quantized weights (kernels/quant.h) run
// kernels/cpu/quant_matmul.h.
void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y,
            MatMulNumerics numerics = MatMulNumerics::kFloat32);

// y[m, n] = weight[n] * x / sqrt(mean(x^2) + eps), row by row; y may alias x.
void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps, float* y);

// Rotate-half RoPE in place on x[m, n_heads, head_dim], row i at positions[i].
void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
               float rope_theta);

// out[n] = silu(gate[n]) * up[n]
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

// q: [n_new, n_heads, head_dim]; k_cache, v_cache: [first_pos + n_new, n_kv_heads, head_dim];
// out: [n_new, n_heads, head_dim].
void Attention(const float* q, const float* k_cache, const float* v_cache,
               const AttentionShape& shape, float* out);

// In-place numerically stable softmax of x[n].
void Softmax(float* x, int64_t n);

namespace reference {
void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y);
void RmsNorm(const float* x, const float* weight, int64_t m, int64_t n, float eps, float* y);
void ApplyRope(float* x, const int32_t* positions, int64_t m, int n_heads, int head_dim,
               float rope_theta);
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
void Attention(const float* q, const float* k_cache, const float* v_cache,
               const AttentionShape& shape, float* out);
void Softmax(float* x, int64_t n);

// The MoE block's routing steps (see Backend for the contracts); the CPU runs these directly.
void RouteTopK(const float* logits, int64_t n, int n_experts, int top_k, int32_t* experts,
               float* weights);
void GatherRows(const float* x, const int64_t* source_row, int64_t n_rows, int64_t hidden,
                float* out);
void CombineRows(const float* expert_out, const int64_t* slot, const int32_t* experts,
                 const float* weights, int64_t n_tokens, int top_k, int64_t hidden,
                 float* residual);
// Sampling candidates (see Backend::TopK).
void TopK(const float* logits, int64_t rows, int64_t vocab, int k, float* values, int32_t* ids,
          int32_t* all_finite);
}  // namespace reference

}  // namespace moe::kernels
