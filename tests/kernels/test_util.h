// Helpers the kernel tests share: random inputs, weights in every dtype, and the error measure the
// goldens use.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/ops.h"

namespace moe::kernels::test_util {

// n normal values with standard deviation `scale`, reproducible from `seed`.
inline std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Relative error by norm, as the golden tests measure it.
inline double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    den += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Round to nearest even through the compiler's half type (the CPU does not convert to F16).
inline uint16_t F32ToF16ForTest(float v) {
  const _Float16 h = static_cast<_Float16>(v);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// Weights of dtype with the float32 values they decode to (16-bit ones are rounded first).
struct Weights {
  std::vector<uint16_t> half;
  std::vector<float> f32;
  WeightMatrix matrix;
};
inline Weights MakeWeights(DType dtype, int64_t rows, int64_t cols, uint32_t seed, float scale) {
  Weights w;
  w.f32 = Random(rows * cols, seed, scale);
  if (dtype != DType::kF32) {
    for (float& v : w.f32) {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBF16(v) : F32ToF16ForTest(v);
      w.half.push_back(h);
      v = dtype == DType::kBF16 ? BF16ToF32(h) : F16ToF32(h);
    }
  }
  w.matrix = WeightMatrix{dtype, w.half.empty() ? static_cast<const void*>(w.f32.data()) : w.half.data(),
                          rows, cols};
  return w;
}

}  // namespace moe::kernels::test_util
