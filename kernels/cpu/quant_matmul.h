// Matrix products on quantized weights (kernels/quant.h) repacked into column panels, for CPUs
// with AVX2: one register-blocked microkernel for every m, integer dot products (vpmaddubsw)
// on activations quantized per row and block, 4-bit weights unpacked in registers.
//
// The layout: output columns (weight rows) in panels of kQuantPanelCols; k padded with zeros to
// whole blocks of kQuantBlock. Within a block, the panel's 16 columns lie side by side in groups
// of 4 consecutive k (a column's 4 bytes, then the next column's): 64 bytes a group, what one
// 512-bit vpdpbusd or two 256-bit vpmaddubsw take. INT8 stores q + 128 as unsigned bytes (so
// the products are unsigned x signed, as both instruction families want; the kernels subtract
// 128 * sum(x) per block); INT4 packs group t of a block (k 4t..4t+3) in the low nibbles and
// group t + 8 in the high nibbles of the same 64 bytes.
//  INT8 panel: scales float32 [16], then per block: 16 groups x 16 columns x 4 bytes (1024 bytes).
//  INT4 panel: per block: scales F16 [16], mins F16 [16], 8 x 16 x 4 bytes (576 bytes in all).
// Padding columns and k carry zeros (zero scales), so they add nothing.
//
// Results equal reference::QuantizedMatMul bit for bit: the integer sums are exact, and the
// float32 steps are the same operations in the same order. So a row's result does not depend on
// m, on the other rows, or on how the work is split (batch invariance).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace moe::kernels::quant {

inline constexpr int64_t kQuantPanelCols = 16;

// This CPU runs the quantized kernels: AVX2, FMA and F16C, checked with CPUID.
bool Available();
// e.g. "INT8/INT4 weights x int8 activations in blocks of 64 (AVX2 vpmaddubsw)".
const char* Describe();

// Bytes of the packed copy of a quantized w (any layout) of w.rows x w.cols.
size_t PackedBytes(DType dtype, int64_t rows, int64_t cols);

// Repacks a row-major quantized w (kI8 or kQ4) into dst (PackedBytes bytes, 64-byte aligned),
// and returns the packed view. Uses the thread pool.
WeightMatrix Pack(const WeightMatrix& w, void* dst);

// Quantizes a row-major 16/32-bit w to `dtype` (kI8 or kQ4) straight into packed panels in dst,
// a panel's rows at a time (no whole-matrix row-major copy), with the thread pool. The values
// are those of QuantizeRowsInt8/Int4 (kernels/quant.h) packed.
WeightMatrix QuantizeAndPack(const WeightMatrix& w, DType dtype, void* dst);

// y[m, w.rows] = x[m, w.cols] @ w^T on a packed quantized w. REQUIRES: Available().
void MatMul(const float* x, int64_t m, const WeightMatrix& w, float* y);

// Row r of a packed quantized w, dequantized into out[w.cols] (for the tests, and for a
// product on a row a kernel would not take).
void DequantizePackedRow(const WeightMatrix& w, int64_t r, float* out);

}  // namespace moe::kernels::quant
