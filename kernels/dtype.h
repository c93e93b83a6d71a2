// Element types of weight tensors and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>

namespace moe {

// The float types, and the two quantized weight formats (kernels/quant.h), whose matrices carry
// scales beside their integers.
enum class DType : uint8_t { kF32, kBF16, kF16, kI8, kQ4 };

// Bytes per element of the float types (and INT8's integers); kQ4 packs two elements a byte.
inline int DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kI8:
    case DType::kQ4:
      return 1;
  }
  return 4;
}
inline const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kI8:
      return "INT8";
    case DType::kQ4:
      return "INT4";
  }
  return "?";
}

// BF16 is the upper half of an IEEE float32, so widening is exact.
inline float BF16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, NaN stays NaN (as torch does).
inline uint16_t F32ToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE binary16 -> float32, exact for every value including subnormals, inf and NaN.
inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// float32 -> IEEE binary16, round to nearest even (overflow to infinity, NaN stays NaN): the
// quantized formats' scales.
inline uint16_t F32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // 65520 and above round to infinity
  if (x < 0x38800000u) {                        // below 2^-14: a subnormal half, or zero
    if (x < 0x33000000u) return sign;           // below 2^-25: rounds to zero
    const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(x >> 23);  // in units of 2^-24
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u) != 0)) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  const uint32_t rounded = x + 0xfffu + ((x >> 13) & 1u) - 0x38000000u;  // rebias 127 -> 15
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

// Widens n elements of type `t` (a float type) at `src` into float32.
inline void ConvertRowToF32Scalar(DType t, const void* src, int64_t n, float* dst) {
  switch (t) {
    case DType::kI8:
    case DType::kQ4:
      break;  // quantized rows need their scales: DequantizeRow (kernels/quant.h)
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToF32(s[i]);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
  }
}

}  // namespace moe
