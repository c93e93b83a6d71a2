// Compiled once per instruction set by Highway's foreach_target; see simd_kernels.h.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd_kernels.cc"
// clang-format off: foreach_target re-includes this file, so the order is Highway's.
#include <cmath>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/cpu/simd_kernels.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace moe::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// Loads lanes(DF) weights starting at element i of a row of type T, widened to float32.
template <DType T>
HWY_INLINE hn::Vec<DF> LoadWeights(DF df, const void* row, int64_t i) {
  if constexpr (T == DType::kF32) {
    return hn::LoadU(df, static_cast<const float*>(row) + i);
  } else if constexpr (T == DType::kBF16) {
    const hn::Rebind<uint16_t, DF> d16;
    const hn::Rebind<uint32_t, DF> d32;
    const auto raw = hn::LoadU(d16, static_cast<const uint16_t*>(row) + i);
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(d32, raw)));
  } else {
    const hn::Rebind<hwy::float16_t, DF> d16;
    return hn::PromoteTo(df, hn::LoadU(d16, static_cast<const hwy::float16_t*>(row) + i));
  }
}

template <DType T>
HWY_INLINE float LoadWeightScalar(const void* row, int64_t i) {
  if constexpr (T == DType::kF32) {
    return static_cast<const float*>(row)[i];
  } else if constexpr (T == DType::kBF16) {
    return BF16ToF32(static_cast<const uint16_t*>(row)[i]);
  } else {
    return F16ToF32(static_cast<const uint16_t*>(row)[i]);
  }
}

// M tokens x R weight rows at once: R independent weight streams keep the memory system busy,
// M tokens reuse every loaded weight vector.
template <DType T, int M, int R>
HWY_INLINE void GemvBlock(const float* x, int64_t k, const char* w, int64_t row_bytes, int64_t j,
                          float* y, int64_t ldy) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<DF> acc[M][R];
  for (int t = 0; t < M; ++t)
    for (int r = 0; r < R; ++r) acc[t][r] = hn::Zero(df);
  const void* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w + (j + r) * row_bytes;
  int64_t i = 0;
  for (; i + n <= k; i += n) {
    hn::Vec<DF> wv[R];
    for (int r = 0; r < R; ++r) wv[r] = LoadWeights<T>(df, rows[r], i);
    for (int t = 0; t < M; ++t) {
      const auto xv = hn::LoadU(df, x + t * k + i);
      for (int r = 0; r < R; ++r) acc[t][r] = hn::MulAdd(wv[r], xv, acc[t][r]);
    }
  }
  for (int t = 0; t < M; ++t) {
    for (int r = 0; r < R; ++r) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[t][r]));
      for (int64_t c = i; c < k; ++c) sum += LoadWeightScalar<T>(rows[r], c) * x[t * k + c];
      y[t * ldy + j + r] = sum;
    }
  }
}

template <DType T, int M>
void GemvTyped(const float* x, const WeightMatrix& w, int64_t row_begin, int64_t row_end, float* y,
               int64_t ldy) {
  constexpr int kRows = M <= 2 ? 4 : 2;  // keeps M * kRows accumulators within the register file
  const char* base = static_cast<const char*>(w.data);
  const int64_t row_bytes = w.cols * DTypeSize(T);
  int64_t j = row_begin;
  for (; j + kRows <= row_end; j += kRows) GemvBlock<T, M, kRows>(x, w.cols, base, row_bytes, j, y, ldy);
  for (; j < row_end; ++j) GemvBlock<T, M, 1>(x, w.cols, base, row_bytes, j, y, ldy);
}

template <DType T>
void GemvDispatchM(const float* x, int m, const WeightMatrix& w, int64_t b, int64_t e, float* y,
                   int64_t ldy) {
  switch (m) {
    case 1: return GemvTyped<T, 1>(x, w, b, e, y, ldy);
    case 2: return GemvTyped<T, 2>(x, w, b, e, y, ldy);
    case 3: return GemvTyped<T, 3>(x, w, b, e, y, ldy);
    default: return GemvTyped<T, 4>(x, w, b, e, y, ldy);
  }
}

void GemvRowsImpl(const float* x, int m, const WeightMatrix& w, int64_t row_begin, int64_t row_end,
                  float* y, int64_t ldy) {
  switch (w.dtype) {
    case DType::kF32: return GemvDispatchM<DType::kF32>(x, m, w, row_begin, row_end, y, ldy);
    case DType::kBF16: return GemvDispatchM<DType::kBF16>(x, m, w, row_begin, row_end, y, ldy);
    case DType::kF16: return GemvDispatchM<DType::kF16>(x, m, w, row_begin, row_end, y, ldy);
    case DType::kI8:
    case DType::kQ4:
      break;  // quantized weights take kernels/cpu/quant_matmul.h
  }
}

template <DType T>
void ConvertTyped(const void* src, int64_t n, float* dst) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(LoadWeights<T>(df, src, i), df, dst + i);
  for (; i < n; ++i) dst[i] = LoadWeightScalar<T>(src, i);
}

void ConvertToF32Impl(DType t, const void* src, int64_t n, float* dst) {
  switch (t) {
    case DType::kF32: return ConvertTyped<DType::kF32>(src, n, dst);
    case DType::kBF16: return ConvertTyped<DType::kBF16>(src, n, dst);
    case DType::kF16: return ConvertTyped<DType::kF16>(src, n, dst);
    case DType::kI8:
    case DType::kQ4:
      break;  // quantized rows need their scales (DequantizeRow)
  }
}

void RmsNormRowImpl(const float* x, const float* weight, int64_t n, float eps, float* y) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto acc = hn::Zero(df);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(df, x + i);
    acc = hn::MulAdd(v, v, acc);
  }
  float ss = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  const auto vinv = hn::Set(df, inv);
  for (i = 0; i + lanes <= n; i += lanes)
    hn::StoreU(hn::Mul(hn::LoadU(df, weight + i), hn::Mul(hn::LoadU(df, x + i), vinv)), df, y + i);
  for (; i < n; ++i) y[i] = weight[i] * (x[i] * inv);
}

void SiluMulImpl(const float* gate, const float* up, int64_t n, float* out) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto one = hn::Set(df, 1.0f);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto g = hn::LoadU(df, gate + i);
    // Highway's Exp is only valid up to ~88 (float overflow); beyond it silu(g) is -0 anyway.
    const auto neg = hn::Min(hn::Neg(g), hn::Set(df, 88.0f));
    const auto sig = hn::Div(one, hn::Add(one, hn::Exp(df, neg)));
    hn::StoreU(hn::Mul(hn::Mul(g, sig), hn::LoadU(df, up + i)), df, out + i);
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

float SumImpl(const float* x, int64_t n) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    // 8 KiB ahead, as the quantized kernels ask for their panels: a probe that read less well
    // than the kernels would put them above 100% of "the bandwidth".
    hwy::Prefetch(x + i + 2048);
    a0 = hn::Add(a0, hn::LoadU(df, x + i));
    a1 = hn::Add(a1, hn::LoadU(df, x + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(df, x + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(df, x + i + 3 * lanes));
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) sum += x[i];
  return sum;
}

void AttendRowImpl(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys,
                   int64_t d, float scale, float* scores, float* out) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t whole = d / lanes * lanes;
  float max = -HUGE_VALF;
  for (int64_t p = 0; p < n_keys; ++p) {
    const float* kp = k + p * stride;
    auto acc = hn::Zero(df);
    for (int64_t i = 0; i < whole; i += lanes)
      acc = hn::MulAdd(hn::LoadU(df, q + i), hn::LoadU(df, kp + i), acc);
    float dot = hn::GetLane(hn::SumOfLanes(df, acc));
    for (int64_t i = whole; i < d; ++i) dot += q[i] * kp[i];
    scores[p] = dot * scale;
    max = std::max(max, scores[p]);
  }
  const auto vmax = hn::Set(df, max);
  auto vsum = hn::Zero(df);
  int64_t p = 0;
  for (; p + lanes <= n_keys; p += lanes) {
    // Clamped: Highway's Exp is specified down to about -87, where the weight is 0 anyway.
    const auto e =
        hn::Exp(df, hn::Max(hn::Sub(hn::LoadU(df, scores + p), vmax), hn::Set(df, -87.0f)));
    hn::StoreU(e, df, scores + p);
    vsum = hn::Add(vsum, e);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; p < n_keys; ++p) {
    scores[p] = std::exp(scores[p] - max);
    sum += scores[p];
  }
  const float inverse = 1.0f / sum;
  for (int64_t i = 0; i < d; ++i) out[i] = 0.0f;
  for (p = 0; p < n_keys; ++p) {
    const float* vp = v + p * stride;
    const float weight = scores[p] * inverse;
    const auto w = hn::Set(df, weight);
    for (int64_t i = 0; i < whole; i += lanes) {
      hn::StoreU(hn::MulAdd(w, hn::LoadU(df, vp + i), hn::LoadU(df, out + i)), df, out + i);
    }
    for (int64_t i = whole; i < d; ++i) out[i] += weight * vp[i];
  }
}

const char* TargetNameImpl() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace moe::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace moe::kernels::simd {

HWY_EXPORT(GemvRowsImpl);
HWY_EXPORT(ConvertToF32Impl);
HWY_EXPORT(RmsNormRowImpl);
HWY_EXPORT(SiluMulImpl);
HWY_EXPORT(TargetNameImpl);
HWY_EXPORT(SumImpl);
HWY_EXPORT(AttendRowImpl);

void GemvRows(const float* x, int m, const WeightMatrix& w, int64_t row_begin, int64_t row_end,
              float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvRowsImpl)(x, m, w, row_begin, row_end, y, ldy);
}
void ConvertToF32(DType t, const void* src, int64_t n, float* dst) {
  HWY_DYNAMIC_DISPATCH(ConvertToF32Impl)(t, src, n, dst);
}
void RmsNormRow(const float* x, const float* weight, int64_t n, float eps, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormRowImpl)(x, weight, n, eps, y);
}
void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(SiluMulImpl)(gate, up, n, out);
}
const char* TargetName() { return HWY_DYNAMIC_DISPATCH(TargetNameImpl)(); }
void AttendRow(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys,
               int64_t d, float scale, float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(AttendRowImpl)(q, k, v, stride, n_keys, d, scale, scores, out);
}
float Sum(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(SumImpl)(x, n); }

}  // namespace moe::kernels::simd
#endif  // HWY_ONCE
