// Quantized weights: the two formats (DType::kI8, DType::kQ4), what their bytes mean, how 16-bit
// weights become them, how activations are quantized for the integer products, and the plain
// scalar arithmetic that the fast kernels (kernels/cpu/quant_matmul.h) reproduce bit for bit.
//
// The products multiply integer weights by activations quantized to int8, each row in blocks of
// kQuantBlock along k with a scale per block (as llama.cpp's Q8_0 activations): a row's values
// depend on that row alone, so batch invariance holds, and an outlier costs only its own block's
// precision. Per block the integer dot product is exact (int32); blocks are combined in float32
// in ascending k, one fused multiply-add at a time, in the order the reference below spells out.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"

namespace moe::kernels {

// Elements of k per block of quantized activations, and per group of the 4-bit format: 64, as
// fine as llama.cpp's Q4_K sub-blocks of 32 would cost 0.5 bits more per weight for a scale and
// a minimum in F16; on the demo model's held-out Python, groups of 32 and of 64 measured within
// noise of each other (README, "Quantized weights").
inline constexpr int64_t kQuantBlock = 64;

// A quantized checkpoint's config.json names these in its quantization_config (quant_method,
// format_version, group_size = kQuantBlock); a reader refuses any other.
inline constexpr char kQuantMethod[] = "moe-cluster";
inline constexpr int kQuantFormatVersion = 1;

// Row-major storage of the quantized formats (WeightMatrix with layout kRowMajor):
//  kI8 (INT8): w[r, c] = scale[r] * q[r, c]. data: int8 q [rows, cols], |q| <= 127;
//    scales: float32 [rows] (one per output channel).
//  kQ4 (INT4): w[r, c] = scale[r, g] * q[r, c] + min[r, g], g = c / kQuantBlock, q in 0..15.
//    data: uint8 [rows, (cols + 1) / 2], element c in byte c / 2, the low nibble when c is even;
//    scales and mins: F16 [rows, groups], groups = ceil(cols / kQuantBlock).
// Bytes of data, and of scales plus mins, of such a matrix.
int64_t QuantDataBytes(DType dtype, int64_t rows, int64_t cols);
int64_t QuantScaleBytes(DType dtype, int64_t rows, int64_t cols);
inline bool IsQuantized(DType t) { return t == DType::kI8 || t == DType::kQ4; }
inline int64_t QuantGroups(int64_t cols) { return (cols + kQuantBlock - 1) / kQuantBlock; }

// What a program asks a tensor class to be held as.
enum class WeightFormat : uint8_t {
  kAsStored,  // the checkpoint's own dtype (16-bit, float32, or its quantized format)
  kInt8,
  kInt4,
};
const char* WeightFormatName(WeightFormat f);  // "as stored", "int8", "int4"
// "int8" | "int4" | "stored" / "none" / "bf16" / "f16" / "f32" / "16bit" (all: as stored). The
// error names the value.
absl::StatusOr<WeightFormat> ParseWeightFormat(const std::string& name);
// The dtype a weight of dtype `stored` has once held as `format`.
DType HeldDType(DType stored, WeightFormat format);
// Bits per weight of a dtype in memory, scales included (e.g. 8.0 + 32/cols for kI8).
double BitsPerWeight(DType dtype, int64_t cols);

// Quantizes row-major 16/32-bit weights w (w.dtype kF32, kBF16 or kF16) rows [row_begin,
// row_end) into the row-major quantized storage above (pointers to the whole matrix's arrays).
// INT8: scale = max|w| / 127, q = round(w * (1 / scale)). INT4: per group, the scale and
// minimum with the least squared error, each weight's error weighted by rms(group) + |w| (larger
// weights matter more), among the plain min/max range and 9 ranges stretched or shrunk around
// it, each refitted by weighted least squares and rounded to F16 (llama.cpp's k-quants search
// theirs so). A row (INT8) or group (INT4) holding a NaN or an infinity gets levels 0 and a NaN
// scale (and min), so its output channel is NaN, as it would be at 16 bits.
void QuantizeRowsInt8(const WeightMatrix& w, int64_t row_begin, int64_t row_end, int8_t* q,
                      float* scales);
void QuantizeRowsInt4(const WeightMatrix& w, int64_t row_begin, int64_t row_end, uint8_t* q,
                      uint16_t* scales, uint16_t* mins);

// Row r of a row-major quantized matrix, dequantized: out[w.cols].
void DequantizeRow(const WeightMatrix& w, int64_t r, float* out);

// One block of activations x[n] (n <= kQuantBlock) quantized: q[n], d = max|x| / 127, q =
// round-to-nearest-even(x * (1 / d)) (all 0 when d = 0), sum = sum of q. A block holding a
// NaN or an infinity gets d = NaN, so every product it enters is NaN, as in float32.
void QuantizeActivationBlock(const float* x, int64_t n, int8_t* q, float* d, int32_t* sum);

namespace reference {
// QuantizeRowsInt4 compiled for the baseline instruction set (SSE2): the same bits as the AVX2
// build QuantizeRowsInt4 runs where the CPU has it (same operations, same order of sums).
void QuantizeRowsInt4(const WeightMatrix& w, int64_t row_begin, int64_t row_end, uint8_t* q,
                      uint16_t* scales, uint16_t* mins);

// y[m, w.rows] = x[m, w.cols] @ w^T for row-major quantized w, by the quantized arithmetic the
// fast kernels follow, spelled out scalar: x quantized per row by QuantizeActivationBlock, then
// per output, acc = 0 and for each block b in ascending k (dot_b the exact int32 dot product of
// the block's integer weights and activations, d_b its scale, sum_b its activations' sum):
//   kI8: acc = fma(float(dot_b), d_b, acc); y = acc * scale[column]
//   kQ4: acc = fma(float(dot_b), scale[column, b] * d_b, acc);
//        acc = fma(min[column, b], d_b * float(sum_b), acc); y = acc
// The fast kernels equal this bit for bit.
void QuantizedMatMul(const float* x, int64_t m, const WeightMatrix& w, float* y);
}  // namespace reference

}  // namespace moe::kernels
