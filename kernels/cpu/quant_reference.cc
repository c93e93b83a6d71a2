// The quantized formats' plain code (kernels/quant.h): quantizers, dequantizers, the activation
// quantizer and the scalar product the fast kernels are held to.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant.h"

namespace moe::kernels {
namespace {

constexpr int kInt4Levels = 15;  // q in 0..15
constexpr uint16_t kF16NaN = 0x7e00;

// x rounded to the nearest integer, ties to even (nearbyint under the default rounding mode), for
// |x| < 2^22: adding 1.5 * 2^23 moves x where floats are whole numbers. Inline arithmetic, where
// std::nearbyint is a library call: it made quantizing ten times slower.
inline float RoundToInt(float x) { return (x + 12582912.0f) - 12582912.0f; }

// q for v under (s, m) (inverse = 1 / s): round((v - m) / s) clamped to the levels; 0 when s
// is 0. Clamping first changes no level and keeps the rounding in range.
inline int LevelOf(float v, float inverse, float m) {
  const float x = (v - m) * inverse;
  if (!(x > 0)) return 0;  // NaN too
  return static_cast<int>(RoundToInt(std::min(x, static_cast<float>(kInt4Levels))));
}
inline float Inverse(float s) { return s > 0 ? 1.0f / s : 0.0f; }

// --- The INT4 group fit ----------------------------------------------------------------------
// Written on 8-float vectors (GCC's vector extensions) over a group padded to 64 values with zero
// importance, and compiled twice: for AVX2 (8 lanes a vector) and for the baseline (SSE: two
// halves). Every step is the same IEEE operation lane by lane (no fused multiply-adds: ISO C++
// mode keeps -ffp-contract=off) and every horizontal sum has one fixed order, so both give the
// same bits: a model quantizes the same on every x86 machine, 10x faster than scalar code.
typedef float F8 __attribute__((vector_size(32)));
// F8 values pass between always-inline functions only, so no call ever uses the vector ABI that
// this warns about.
#pragma GCC diagnostic ignored "-Wpsabi"
constexpr int kFitVectors = static_cast<int>(kQuantBlock / 8);

struct Int4Fit {
  uint16_t scale = 0, min = 0;  // F16
  float error = std::numeric_limits<float>::infinity();
};

#define MOE_FIT_INLINE inline __attribute__((always_inline))

MOE_FIT_INLINE F8 Splat(float x) { return F8{x, x, x, x, x, x, x, x}; }
MOE_FIT_INLINE float Sum8(F8 a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
MOE_FIT_INLINE F8 Round8(F8 x) { return (x + Splat(12582912.0f)) - Splat(12582912.0f); }
// round(x) clamped to 0..15, with NaN (and everything below 0) at 0.
MOE_FIT_INLINE F8 Level8(F8 x) {
  x = x > Splat(0.0f) ? x : Splat(0.0f);
  x = x < Splat(static_cast<float>(kInt4Levels)) ? x : Splat(static_cast<float>(kInt4Levels));
  return Round8(x);
}

// Scores (s, m) rounded to F16 as they will be stored, each value at its best level: the
// importance-weighted squared error.
MOE_FIT_INLINE Int4Fit Score(const F8* v, const F8* w, float s, float m) {
  Int4Fit fit;
  fit.scale = F32ToF16(std::max(s, 0.0f));
  fit.min = F32ToF16(m);
  const float s16 = F16ToF32(fit.scale), m16 = F16ToF32(fit.min);
  if (!std::isfinite(s16) || !std::isfinite(m16)) return fit;  // error stays infinite
  const F8 inverse = Splat(Inverse(s16)), scale = Splat(s16), min = Splat(m16);
  F8 error = Splat(0.0f);
  for (int j = 0; j < kFitVectors; ++j) {
    const F8 e = scale * Level8((v[j] - min) * inverse) + min - v[j];
    error += w[j] * e * e;
  }
  fit.error = Sum8(error);
  return fit;
}

// One group's scale and minimum (v: the group's values, padding 0; w: their importance
// rms + |v|, padding 0; lo, hi: the values' range): the plain min/max range, then ranges stretched
// or shrunk around it (the search of llama.cpp's make_qkx2_quants: iscale = (15 + delta) /
// (max - min)), each quantized and refitted by weighted least squares; the least error wins.
MOE_FIT_INLINE Int4Fit FitGroup(const F8* v, const F8* w, float lo, float hi) {
  Int4Fit best = Score(v, w, (hi - lo) / kInt4Levels, lo);
  if (!(hi > lo)) return best;
  F8 sw8 = Splat(0.0f), sv8 = Splat(0.0f);
  for (int j = 0; j < kFitVectors; ++j) {
    sw8 += w[j];
    sv8 += w[j] * v[j];
  }
  const float sw = Sum8(sw8), sv = Sum8(sv8);
  for (int step = -4; step <= 4; ++step) {
    const F8 iscale = Splat((kInt4Levels + 0.25f * static_cast<float>(step)) / (hi - lo));
    F8 sq8 = Splat(0.0f), sqq8 = Splat(0.0f), sqv8 = Splat(0.0f);
    for (int j = 0; j < kFitVectors; ++j) {
      const F8 l = Level8(iscale * (v[j] - Splat(lo)));
      const F8 wl = w[j] * l;
      sq8 += wl;
      sqq8 += wl * l;
      sqv8 += wl * v[j];
    }
    const float sq = Sum8(sq8), sqq = Sum8(sqq8), sqv = Sum8(sqv8);
    const float det = sw * sqq - sq * sq;
    if (!(det > 0)) continue;
    const float s = (sw * sqv - sq * sv) / det;
    const float m = (sv - s * sq) / sw;
    const Int4Fit fit = Score(v, w, s, m);
    if (fit.error < best.error) best = fit;
  }
  return best;
}

// Gathers a group of n <= 64 values into vectors (padding 0, importance 0) and fits it.
MOE_FIT_INLINE Int4Fit FitInt4GroupImpl(const float* values, int64_t n) {
  F8 v[kFitVectors], w[kFitVectors];
  float lo = values[0], hi = values[0], sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, values[i]);
    hi = std::max(hi, values[i]);
    sum_sq += values[i] * values[i];
  }
  const float typical = std::sqrt(sum_sq / static_cast<float>(n));
  for (int64_t i = 0; i < kQuantBlock; ++i) {
    const bool in = i < n;
    v[i / 8][i % 8] = in ? values[i] : 0.0f;
    w[i / 8][i % 8] = in ? typical + std::fabs(values[i]) : 0.0f;
  }
  return FitGroup(v, w, lo, hi);
}

__attribute__((target("avx2"))) Int4Fit FitInt4GroupAvx2(const float* values, int64_t n) {
  return FitInt4GroupImpl(values, n);
}
Int4Fit FitInt4GroupBaseline(const float* values, int64_t n) { return FitInt4GroupImpl(values, n); }

using FitFn = Int4Fit (*)(const float*, int64_t);

FitFn BestFit() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") != 0;
  if (avx2) return FitInt4GroupAvx2;
#endif
  return FitInt4GroupBaseline;
}

void QuantizeRowsInt4With(FitFn fit_group, const WeightMatrix& w, int64_t row_begin,
                          int64_t row_end, uint8_t* q, uint16_t* scales, uint16_t* mins) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  const int64_t elem = DTypeSize(w.dtype), groups = QuantGroups(w.cols);
  const int64_t row_bytes = (w.cols + 1) / 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    ConvertRowToF32Scalar(w.dtype, static_cast<const char*>(w.data) + r * w.cols * elem, w.cols,
                          row.data());
    uint8_t* out = q + r * row_bytes;
    std::fill(out, out + row_bytes, uint8_t{0});
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * kQuantBlock, n = std::min(kQuantBlock, w.cols - c0);
      if (!std::all_of(row.begin() + c0, row.begin() + c0 + n,
                       [](float v) { return std::isfinite(v); })) {
        scales[r * groups + g] = mins[r * groups + g] = kF16NaN;  // levels stay 0 (quant.h)
        continue;
      }
      const Int4Fit fit = fit_group(row.data() + c0, n);
      scales[r * groups + g] = fit.scale;
      mins[r * groups + g] = fit.min;
      const float inverse = Inverse(F16ToF32(fit.scale)), m = F16ToF32(fit.min);
      for (int64_t c = c0; c < c0 + n; ++c) {
        const int level = LevelOf(row[c], inverse, m);
        out[c / 2] = static_cast<uint8_t>(out[c / 2] | (level << (c % 2 == 0 ? 0 : 4)));
      }
    }
  }
}

}  // namespace

int64_t QuantDataBytes(DType dtype, int64_t rows, int64_t cols) {
  return dtype == DType::kQ4 ? rows * ((cols + 1) / 2) : rows * cols;
}

int64_t QuantScaleBytes(DType dtype, int64_t rows, int64_t cols) {
  return dtype == DType::kQ4 ? rows * QuantGroups(cols) * 4 : rows * 4;
}

const char* WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kAsStored:
      return "as stored";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
  }
  return "?";
}

absl::StatusOr<WeightFormat> ParseWeightFormat(const std::string& name) {
  if (name == "int8") return WeightFormat::kInt8;
  if (name == "int4") return WeightFormat::kInt4;
  if (name == "stored" || name == "none" || name == "bf16" || name == "f16" || name == "f32" ||
      name == "16bit") {
    return WeightFormat::kAsStored;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight format '", name, "' (int8, int4, or stored / none)"));
}

DType HeldDType(DType stored, WeightFormat format) {
  switch (format) {
    case WeightFormat::kInt8:
      return DType::kI8;
    case WeightFormat::kInt4:
      return DType::kQ4;
    case WeightFormat::kAsStored:
      break;
  }
  return stored;
}

double BitsPerWeight(DType dtype, int64_t cols) {
  switch (dtype) {
    case DType::kI8:
      return 8.0 + 32.0 / static_cast<double>(std::max<int64_t>(cols, 1));
    case DType::kQ4:
      return 4.0 + 32.0 / kQuantBlock;
    default:
      break;
  }
  return 8.0 * DTypeSize(dtype);
}

void QuantizeRowsInt8(const WeightMatrix& w, int64_t row_begin, int64_t row_end, int8_t* q,
                      float* scales) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  const int64_t elem = DTypeSize(w.dtype);
  for (int64_t r = row_begin; r < row_end; ++r) {
    ConvertRowToF32Scalar(w.dtype, static_cast<const char*>(w.data) + r * w.cols * elem, w.cols,
                          row.data());
    float amax = 0;
    bool finite = true;
    for (float v : row) {
      amax = std::max(amax, std::fabs(v));
      finite = finite && std::isfinite(v);
    }
    if (!finite) {  // the channel stays NaN (quant.h)
      scales[r] = std::numeric_limits<float>::quiet_NaN();
      std::fill(q + r * w.cols, q + (r + 1) * w.cols, int8_t{0});
      continue;
    }
    const float scale = amax / 127.0f;
    const float inverse = Inverse(scale);
    scales[r] = scale;
    for (int64_t c = 0; c < w.cols; ++c) {
      const float level = RoundToInt(std::clamp(row[c] * inverse, -127.0f, 127.0f));
      q[r * w.cols + c] = static_cast<int8_t>(level);
    }
  }
}

void QuantizeRowsInt4(const WeightMatrix& w, int64_t row_begin, int64_t row_end, uint8_t* q,
                      uint16_t* scales, uint16_t* mins) {
  QuantizeRowsInt4With(BestFit(), w, row_begin, row_end, q, scales, mins);
}

void DequantizeRow(const WeightMatrix& w, int64_t r, float* out) {
  if (w.dtype == DType::kI8) {
    const auto* q = static_cast<const int8_t*>(w.data) + r * w.cols;
    const float scale = static_cast<const float*>(w.scales)[r];
    for (int64_t c = 0; c < w.cols; ++c) out[c] = scale * static_cast<float>(q[c]);
    return;
  }
  if (w.dtype == DType::kQ4) {
    const auto* q = static_cast<const uint8_t*>(w.data) + r * ((w.cols + 1) / 2);
    const int64_t groups = QuantGroups(w.cols);
    const auto* scales = static_cast<const uint16_t*>(w.scales) + r * groups;
    const auto* mins = static_cast<const uint16_t*>(w.mins) + r * groups;
    for (int64_t c = 0; c < w.cols; ++c) {
      const int level = (q[c / 2] >> (c % 2 == 0 ? 0 : 4)) & 0xf;
      const int64_t g = c / kQuantBlock;
      out[c] = F16ToF32(scales[g]) * static_cast<float>(level) + F16ToF32(mins[g]);
    }
    return;
  }
  ConvertRowToF32Scalar(w.dtype, static_cast<const char*>(w.data) + r * w.cols * DTypeSize(w.dtype),
                        w.cols, out);
}

void QuantizeActivationBlock(const float* x, int64_t n, int8_t* q, float* d, int32_t* sum) {
  float amax = 0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  *sum = 0;
  if (!finite) {
    *d = std::numeric_limits<float>::quiet_NaN();
    std::fill(q, q + n, int8_t{0});
    return;
  }
  *d = amax / 127.0f;
  const float inverse = *d > 0 ? 1.0f / *d : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inverse));
    *sum += q[i];
  }
}

namespace reference {

void QuantizeRowsInt4(const WeightMatrix& w, int64_t row_begin, int64_t row_end, uint8_t* q,
                      uint16_t* scales, uint16_t* mins) {
  QuantizeRowsInt4With(FitInt4GroupBaseline, w, row_begin, row_end, q, scales, mins);
}

void QuantizedMatMul(const float* x, int64_t m, const WeightMatrix& w, float* y) {
  const int64_t k = w.cols, blocks = QuantGroups(k);
  std::vector<int8_t> xq(static_cast<size_t>(k));
  std::vector<float> d(static_cast<size_t>(blocks));
  std::vector<int32_t> sums(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kQuantBlock;
      QuantizeActivationBlock(x + i * k + c0, std::min(kQuantBlock, k - c0), xq.data() + c0, &d[b],
                              &sums[b]);
    }
    for (int64_t j = 0; j < w.rows; ++j) {
      float acc = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t c0 = b * kQuantBlock, c1 = std::min(k, c0 + kQuantBlock);
        int32_t dot = 0;
        if (w.dtype == DType::kI8) {
          const auto* wq = static_cast<const int8_t*>(w.data) + j * k;
          for (int64_t c = c0; c < c1; ++c) dot += int32_t{wq[c]} * xq[c];
          acc = std::fma(static_cast<float>(dot), d[b], acc);
        } else {
          const auto* wq = static_cast<const uint8_t*>(w.data) + j * ((k + 1) / 2);
          for (int64_t c = c0; c < c1; ++c)
            dot += ((wq[c / 2] >> (c % 2 == 0 ? 0 : 4)) & 0xf) * xq[c];
          const float scale = F16ToF32(static_cast<const uint16_t*>(w.scales)[j * blocks + b]);
          const float min = F16ToF32(static_cast<const uint16_t*>(w.mins)[j * blocks + b]);
          acc = std::fma(static_cast<float>(dot), scale * d[b], acc);
          acc = std::fma(min, d[b] * static_cast<float>(sums[b]), acc);
        }
      }
      y[i * w.rows + j] =
          w.dtype == DType::kI8 ? acc * static_cast<const float*>(w.scales)[j] : acc;
    }
  }
}

}  // namespace reference
}  // namespace moe::kernels
