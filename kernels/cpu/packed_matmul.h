// Matrix products on weights repacked into column panels, for CPUs with AVX-512: one
// register-blocked microkernel for every m (decode's GEMV and prefill's GEMM alike), BF16 weights
// multiplied with the CPU's AMX tiles or BF16 dot-product instruction (AVX512_BF16 vdpbf16ps) or
// widened to float32, F16 weights widened with F16C, float32 weights with FMAs.
//
// Batch invariance, by construction: every output y[i, j] is one chain of multiply-adds over k in
// ascending order, started from zero, whatever m is, whichever rows share the call, however the
// work is split over threads or cache blocks (a block boundary stores the float32 accumulator and
// reloads it, which changes nothing). So a row's result is bit for bit what it is alone.
//
// The layout (PackedLayout below): the output columns (weight rows) go in panels of kPanelCols;
// inside a panel, k runs outermost in groups of kGroup(dtype) elements (pairs for BF16, the unit
// vdpbf16ps multiplies), and within a group the panel's columns lie side by side. The microkernel
// then loads kPanelCols / 16 vectors per k group and multiplies them with broadcast activations:
// no horizontal sums, and the panel streams from memory front to back.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace moe::kernels::packed {

inline constexpr int kPanelCols = 48;  // 3 AVX-512 vectors of float32 accumulators

// Elements of k packed together: BF16 pairs (vdpbf16ps multiplies pairs), else 1.
inline int64_t KGroup(DType t) { return t == DType::kBF16 ? 2 : 1; }

// This CPU runs the packed kernels: AVX-512 F, BW, VL, DQ and F16C, checked with CPUID.
bool Available();
// This CPU also has the BF16 dot product (AVX512_BF16).
bool HasBf16Dot();
// This CPU has AMX tiles with BF16 (AMX-TILE, AMX-BF16), the OS granted this process their
// state, and AllowAmx(false) did not turn them off.
bool HasAmx();
// Whether products may use AMX tiles (default: yes, where present), to compare the two BF16
// paths on one machine. Takes effect only before the first product or HasAmx() call.
void AllowAmx(bool allowed);

// How the products of BF16 weights are computed. Other dtypes are always widened to float32.
enum class Products {
  kFloat32,  // weights widened exactly, float32 activations, float32 FMAs
  kBf16Dot,  // activations rounded to BF16 once per call, vdpbf16ps (float32 without AVX512_BF16)
  kBf16Amx,  // activations rounded the same way, AMX tile multiplies (float32 without AMX)
};

// The fastest BF16 products with rounded activations this CPU has: AMX, else vdpbf16ps, else
// float32. The two rounded kinds differ in the last bits, so a process uses one of them for
// every product (batch invariance holds within each).
Products Bf16Products();
// e.g. "BF16 weights x activations rounded to BF16 (vdpbf16ps)".
const char* Describe(Products products);

// Bytes of w's packed copy: whole panels, k rounded up to a whole group, zero padded.
size_t PackedBytes(const WeightMatrix& w);

// Repacks the row-major w into dst (PackedBytes(w) bytes, 64-byte aligned) using the thread pool,
// and returns the packed view of it. REQUIRES: Available().
WeightMatrix Pack(const WeightMatrix& w, void* dst);

// y[m, w.rows] = x[m, w.cols] @ w^T on a packed w, float32 accumulation.
// With BF16 weights, `products` says how: rounding x to BF16 (round to nearest even, as
// llama.cpp and cuBLAS do) once per call for the BF16 instructions, or float32 products of the
// exactly widened weights. F16 and F32 weights always take the float32 path: these CPUs have no
// F16 dot product with float32 sums, and widening costs the same whether or not x is rounded.
// REQUIRES: Available().
void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y, Products products);

}  // namespace moe::kernels::packed
