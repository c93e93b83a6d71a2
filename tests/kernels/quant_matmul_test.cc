// The quantized formats and kernels (kernels/quant.h, kernels/cpu/quant_matmul.h): the
// quantizers against their definitions, the packed kernels bit for bit against the scalar
// reference of the same arithmetic for every format and every m from 1 to 130 at awkward sizes,
// both against the exact product of the dequantized weights within the bound the activations'
// rounding allows, and batch invariance, bit for bit. Skipped, saying why, on CPUs without AVX2.
#include "kernels/cpu/quant_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"
#include "tests/kernels/test_util.h"

namespace moe::kernels {
namespace {

using test_util::Random;

// A row-major quantized matrix that owns its arrays, made from random 16-bit weights.
struct QuantWeights {
  test_util::Weights source;  // the BF16 weights it was quantized from
  std::vector<uint8_t> data;
  std::vector<float> scales_f32;
  std::vector<uint16_t> scales_f16, mins_f16;
  WeightMatrix matrix;
};

QuantWeights MakeQuantized(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  QuantWeights q;
  q.source = test_util::MakeWeights(DType::kBF16, rows, cols, seed, 0.3f);
  q.data.resize(static_cast<size_t>(QuantDataBytes(dtype, rows, cols)));
  q.matrix = WeightMatrix{dtype, q.data.data(), rows, cols};
  if (dtype == DType::kI8) {
    q.scales_f32.resize(static_cast<size_t>(rows));
    QuantizeRowsInt8(q.source.matrix, 0, rows, reinterpret_cast<int8_t*>(q.data.data()),
                     q.scales_f32.data());
    q.matrix.scales = q.scales_f32.data();
  } else {
    q.scales_f16.resize(static_cast<size_t>(rows * QuantGroups(cols)));
    q.mins_f16.resize(q.scales_f16.size());
    QuantizeRowsInt4(q.source.matrix, 0, rows, q.data.data(), q.scales_f16.data(),
                     q.mins_f16.data());
    q.matrix.scales = q.scales_f16.data();
    q.matrix.mins = q.mins_f16.data();
  }
  return q;
}

// A packed copy that owns its storage.
struct Packed {
  std::vector<char> storage;
  WeightMatrix matrix;
};
char* Aligned(std::vector<char>* storage, size_t bytes) {
  storage->assign(bytes + 64, 0);
  return storage->data() + (64 - reinterpret_cast<uintptr_t>(storage->data()) % 64) % 64;
}
Packed PackForTest(const WeightMatrix& w) {
  Packed p;
  p.matrix = quant::Pack(w, Aligned(&p.storage, quant::PackedBytes(w.dtype, w.rows, w.cols)));
  return p;
}

std::string Describe(DType dtype, int64_t m, int64_t n, int64_t k) {
  return std::string(DTypeName(dtype)) + " m=" + std::to_string(m) + " n=" + std::to_string(n) +
         " k=" + std::to_string(k);
}

class QuantMatMulTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!quant::Available())
      GTEST_SKIP() << "SKIP: this CPU lacks AVX2/FMA/F16C: no quantized kernels";
  }

  // The packed kernel equals the scalar reference bit for bit, and the exact product of the
  // dequantized weights with x within the bound of x's quantization: each x[c] moves by at most
  // half its block's step d_b, so |y - exact| <= sum_c |w[c]| d_b / 2, plus float32 rounding of
  // the blocks' sums (at most (2 blocks + 2) units in the last place of the terms' magnitudes).
  void ExpectMatches(int64_t m, int64_t n, int64_t k, uint32_t seed) {
    const DType dtype = GetParam();
    const QuantWeights q = MakeQuantized(dtype, n, k, seed);
    const Packed p = PackForTest(q.matrix);
    const std::vector<float> x = Random(m * k, seed + 1);
    std::vector<float> got(static_cast<size_t>(m * n)), want(got.size()), exact(got.size());
    quant::MatMul(x.data(), m, p.matrix, got.data());
    reference::QuantizedMatMul(x.data(), m, q.matrix, want.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << Describe(dtype, m, n, k) << ": not bit for bit the reference";
    reference::MatMul(x.data(), m, q.matrix, exact.data());
    const int64_t blocks = QuantGroups(k);
    std::vector<float> row(static_cast<size_t>(k));
    std::vector<int8_t> xq(kQuantBlock);
    for (int64_t i = 0; i < m; ++i) {
      std::vector<float> d(static_cast<size_t>(blocks));
      for (int64_t b = 0; b < blocks; ++b) {
        int32_t sum;
        QuantizeActivationBlock(&x[i * k + b * kQuantBlock],
                                std::min(kQuantBlock, k - b * kQuantBlock), xq.data(), &d[b], &sum);
      }
      for (int64_t j = 0; j < n; ++j) {
        DequantizeRow(q.matrix, j, row.data());
        double rounding = 0, magnitude = 0;
        for (int64_t c = 0; c < k; ++c) {
          rounding += std::fabs(row[c]) * d[c / kQuantBlock] / 2;
          magnitude += std::fabs(row[c]) * (std::fabs(x[i * k + c]) + d[c / kQuantBlock]);
        }
        if (dtype == DType::kQ4) {  // the scale and min terms are summed apart
          for (int64_t b = 0; b < blocks; ++b) {
            const float min = F16ToF32(q.mins_f16[j * blocks + b]);
            for (int64_t c = b * kQuantBlock; c < std::min(k, (b + 1) * kQuantBlock); ++c) {
              magnitude += 2 * std::fabs(min) * (std::fabs(x[i * k + c]) + d[b]);
            }
          }
        }
        const double bound = rounding + (2 * blocks + 2) * std::ldexp(1.0, -24) * magnitude;
        ASSERT_LE(std::fabs(got[i * n + j] - double{exact[i * n + j]}), bound)
            << Describe(dtype, m, n, k) << " at row " << i << " column " << j;
      }
    }
  }
};

TEST_P(QuantMatMulTest, EveryRowCountMatchesTheReference) {
  SetCpuThreads(2);
  // n = 37: two whole panels and a third of 5 columns (a partial 8-column half); k = 301: four
  // whole blocks and one of 45.
  for (int64_t m = 1; m <= 130; ++m) ExpectMatches(m, 37, 301, static_cast<uint32_t>(m));
}

TEST_P(QuantMatMulTest, AwkwardShapesMatchTheReference) {
  for (int threads : {1, 3}) {
    SetCpuThreads(threads);
    for (int64_t n : {1, 8, 9, 16, 17, 300}) {
      for (int64_t k : {1, 3, 31, 33, 63, 64, 65, 1030}) {
        for (int64_t m : {1, 2, 3, 5, 70}) ExpectMatches(m, n, k, static_cast<uint32_t>(n * k + m));
      }
    }
  }
}

// Row i of an m-row product equals row i computed alone, bit for bit, for every m from 1 to
// 130, and in a batch of the same rows reversed, on one thread and on three.
TEST_P(QuantMatMulTest, RowsAreBatchInvariant) {
  const int64_t n = 45, k = 600;
  const QuantWeights q = MakeQuantized(GetParam(), n, k, 5);
  const Packed p = PackForTest(q.matrix);
  const std::vector<float> x = Random(130 * k, 6);
  std::vector<float> alone(static_cast<size_t>(130 * n));
  SetCpuThreads(1);
  for (int64_t i = 0; i < 130; ++i)
    quant::MatMul(x.data() + i * k, 1, p.matrix, alone.data() + i * n);
  for (int threads : {1, 3}) {
    SetCpuThreads(threads);
    for (int64_t m = 1; m <= 130; ++m) {
      std::vector<float> batch(static_cast<size_t>(m * n));
      quant::MatMul(x.data(), m, p.matrix, batch.data());
      ASSERT_EQ(std::memcmp(batch.data(), alone.data(), batch.size() * sizeof(float)), 0)
          << Describe(GetParam(), m, n, k) << " threads=" << threads;
    }
    std::vector<float> reversed_x(static_cast<size_t>(130 * k)),
        reversed(static_cast<size_t>(130 * n));
    for (int64_t i = 0; i < 130; ++i)
      std::memcpy(&reversed_x[(129 - i) * k], &x[i * k], k * sizeof(float));
    quant::MatMul(reversed_x.data(), 130, p.matrix, reversed.data());
    for (int64_t i = 0; i < 130; ++i) {
      ASSERT_EQ(std::memcmp(&reversed[(129 - i) * n], &alone[i * n], n * sizeof(float)), 0)
          << "row " << i << " moved to " << 129 - i << ", threads=" << threads;
    }
  }
}

// Quantizing straight into panels (what the backend does at load) writes the same bytes as
// quantizing row-major and packing (what loading a quantized checkpoint does), and the packed
// rows dequantize to the row-major ones.
TEST_P(QuantMatMulTest, QuantizeAndPackEqualsPackingTheQuantizedRows) {
  SetCpuThreads(2);
  const DType dtype = GetParam();
  for (int64_t k : {5, 64, 333}) {
    const QuantWeights q = MakeQuantized(dtype, 40, k, 7);
    const Packed packed = PackForTest(q.matrix);
    std::vector<char> storage;
    const size_t bytes = quant::PackedBytes(dtype, 40, k);
    const WeightMatrix direct =
        quant::QuantizeAndPack(q.source.matrix, dtype, Aligned(&storage, bytes));
    ASSERT_EQ(std::memcmp(direct.data, packed.matrix.data, bytes), 0) << Describe(dtype, 0, 40, k);
    std::vector<float> from_packed(static_cast<size_t>(k)), from_rows(static_cast<size_t>(k));
    for (int64_t r = 0; r < 40; ++r) {
      quant::DequantizePackedRow(direct, r, from_packed.data());
      DequantizeRow(q.matrix, r, from_rows.data());
      ASSERT_EQ(from_packed, from_rows) << "row " << r;
    }
  }
}

// A row whose activations hold a NaN or an infinity gives NaN, as in float32, and harms no other
// row.
TEST_P(QuantMatMulTest, NonFiniteActivationsStayInTheirRow) {
  const int64_t n = 20, k = 70;
  const QuantWeights q = MakeQuantized(GetParam(), n, k, 8);
  const Packed p = PackForTest(q.matrix);
  std::vector<float> x = Random(3 * k, 9);
  std::vector<float> clean(3 * n), dirty(3 * n);
  quant::MatMul(x.data(), 3, p.matrix, clean.data());
  x[k + 40] = std::numeric_limits<float>::quiet_NaN();
  x[2 * k + 3] = std::numeric_limits<float>::infinity();
  quant::MatMul(x.data(), 3, p.matrix, dirty.data());
  for (int64_t j = 0; j < n; ++j) {
    EXPECT_EQ(dirty[j], clean[j]);
    EXPECT_TRUE(std::isnan(dirty[n + j]));
    EXPECT_TRUE(std::isnan(dirty[2 * n + j]));
  }
}

// A NaN or an infinite weight makes its output channel NaN, as at 16 bits, in the quantized
// arrays (a NaN scale) and in the products, and no other channel moves.
TEST_P(QuantMatMulTest, NonFiniteWeightsStayInTheirChannel) {
  const DType dtype = GetParam();
  const int64_t n = 20, k = 130;
  const test_util::Weights source = test_util::MakeWeights(DType::kF32, n, k, 11, 0.3f);
  std::vector<float> poisoned_weights = source.f32;
  poisoned_weights[3 * k + 100] = std::numeric_limits<float>::quiet_NaN();
  poisoned_weights[7 * k + 5] = -std::numeric_limits<float>::infinity();
  std::vector<char> clean_storage, dirty_storage;
  const WeightMatrix clean = quant::QuantizeAndPack(
      WeightMatrix{DType::kF32, source.f32.data(), n, k}, dtype,
      Aligned(&clean_storage, quant::PackedBytes(dtype, n, k)));
  const WeightMatrix dirty = quant::QuantizeAndPack(
      WeightMatrix{DType::kF32, poisoned_weights.data(), n, k}, dtype,
      Aligned(&dirty_storage, quant::PackedBytes(dtype, n, k)));
  const std::vector<float> x = Random(2 * k, 12);
  std::vector<float> want(2 * n), got(2 * n), row(k);
  quant::MatMul(x.data(), 2, clean, want.data());
  quant::MatMul(x.data(), 2, dirty, got.data());
  for (int64_t j = 0; j < n; ++j) {
    const bool poisoned = j == 3 || j == 7;
    quant::DequantizePackedRow(dirty, j, row.data());
    EXPECT_EQ(poisoned, std::any_of(row.begin(), row.end(), [](float v) { return std::isnan(v); }))
        << "channel " << j;
    for (int64_t i = 0; i < 2; ++i) {
      if (poisoned) {
        EXPECT_TRUE(std::isnan(got[i * n + j])) << "row " << i << " channel " << j;
      } else {
        EXPECT_EQ(got[i * n + j], want[i * n + j]) << "row " << i << " channel " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantMatMulTest, ::testing::Values(DType::kI8, DType::kQ4),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// The INT8 quantizer is round to nearest on a grid of max|w| / 127: every weight within half a
// step, the largest exactly representable.
TEST(QuantizerTest, Int8IsRoundToNearestPerRow) {
  const QuantWeights q = MakeQuantized(DType::kI8, 30, 257, 3);
  std::vector<float> row(257);
  for (int64_t r = 0; r < 30; ++r) {
    DequantizeRow(q.matrix, r, row.data());
    float amax = 0;
    for (int64_t c = 0; c < 257; ++c) amax = std::max(amax, std::fabs(q.source.f32[r * 257 + c]));
    EXPECT_FLOAT_EQ(q.scales_f32[r], amax / 127);
    for (int64_t c = 0; c < 257; ++c) {
      ASSERT_LE(std::fabs(row[c] - q.source.f32[r * 257 + c]), q.scales_f32[r] * 0.5001f)
          << r << "," << c;
    }
  }
}

// The INT4 search never does worse than the plain min/max grid (its first candidate) by its own
// measure, the squared error weighted by rms(group) + |w|, and on random normal weights it does
// better on the whole.
TEST(QuantizerTest, Int4SearchBeatsThePlainRange) {
  const int64_t rows = 20, cols = 320;
  const QuantWeights q = MakeQuantized(DType::kQ4, rows, cols, 4);
  std::vector<float> row(cols);
  double searched_total = 0, plain_total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(q.matrix, r, row.data());
    for (int64_t g = 0; g < cols / kQuantBlock; ++g) {
      const float* w = &q.source.f32[r * cols + g * kQuantBlock];
      float lo = w[0], hi = w[0];
      double sum_sq = 0;
      for (int i = 0; i < kQuantBlock; ++i) {
        lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
        sum_sq += double{w[i]} * w[i];
      }
      const double rms = std::sqrt(sum_sq / kQuantBlock);
      const float s = F16ToF32(F32ToF16((hi - lo) / 15)), m = F16ToF32(F32ToF16(lo));
      double searched = 0, plain = 0;
      for (int i = 0; i < kQuantBlock; ++i) {
        const double importance = rms + std::fabs(w[i]);
        const float level = std::clamp(std::nearbyint((w[i] - m) * (1.0f / s)), 0.0f, 15.0f);
        plain += importance * std::pow(s * level + m - w[i], 2);
        searched += importance * std::pow(row[g * kQuantBlock + i] - w[i], 2);
      }
      EXPECT_LE(searched, plain * (1 + 1e-5) + 1e-12) << "row " << r << " group " << g;
      searched_total += searched;
      plain_total += plain;
    }
  }
  EXPECT_LT(searched_total, 0.9 * plain_total);
}

// The INT4 quantizer gives the same levels, scales and minima compiled for AVX2 as for the
// baseline: a checkpoint quantizes the same on every x86 machine.
TEST(QuantizerTest, Int4IsTheSameOnEveryInstructionSet) {
  for (int64_t cols : {64, 100, 4096}) {
    const test_util::Weights w = test_util::MakeWeights(DType::kBF16, 33, cols, 11, 0.05f);
    const int64_t groups = QuantGroups(cols);
    std::vector<uint8_t> q1(static_cast<size_t>(QuantDataBytes(DType::kQ4, 33, cols))),
        q2(q1.size());
    std::vector<uint16_t> s1(static_cast<size_t>(33 * groups)), s2(s1.size()), m1(s1.size()),
        m2(s1.size());
    QuantizeRowsInt4(w.matrix, 0, 33, q1.data(), s1.data(), m1.data());
    reference::QuantizeRowsInt4(w.matrix, 0, 33, q2.data(), s2.data(), m2.data());
    EXPECT_EQ(q1, q2) << cols;
    EXPECT_EQ(s1, s2) << cols;
    EXPECT_EQ(m1, m2) << cols;
  }
}

// A constant group (a zero row, say) is held exactly by its minimum.
TEST(QuantizerTest, Int4HoldsConstantGroupsExactly) {
  std::vector<float> w(2 * 64, 0.0f);
  for (int i = 64; i < 128; ++i) w[i] = 0.375f;
  std::vector<uint8_t> data(64);
  std::vector<uint16_t> scales(4), mins(4);
  QuantizeRowsInt4(WeightMatrix{DType::kF32, w.data(), 2, 64}, 0, 2, data.data(), scales.data(),
                   mins.data());
  WeightMatrix q{DType::kQ4, data.data(), 2, 64};
  q.scales = scales.data();
  q.mins = mins.data();
  std::vector<float> row(64);
  for (int64_t r = 0; r < 2; ++r) {
    DequantizeRow(q, r, row.data());
    for (float v : row) EXPECT_EQ(v, r == 0 ? 0.0f : 0.375f);
  }
}

// Activations: d = max|x| / 127, levels rounded to nearest even, sum of levels.
TEST(QuantizerTest, ActivationBlocks) {
  std::vector<float> x = {1.0f, -2.0f, 0.5f, 127.0f, -127.0f, 63.5f, 0.0f};
  std::vector<int8_t> q(x.size());
  float d;
  int32_t sum;
  QuantizeActivationBlock(x.data(), static_cast<int64_t>(x.size()), q.data(), &d, &sum);
  EXPECT_EQ(d, 1.0f);
  EXPECT_EQ(q, (std::vector<int8_t>{1, -2, 0, 127, -127, 64, 0}));  // 0.5 -> 0, 63.5 -> 64
  EXPECT_EQ(sum, 1 - 2 + 127 - 127 + 64);
  std::vector<float> zeros(5, 0.0f);
  QuantizeActivationBlock(zeros.data(), 5, q.data(), &d, &sum);
  EXPECT_EQ(d, 0.0f);
  EXPECT_EQ(sum, 0);
}

// F32ToF16 rounds as the compiler's half type does, edge cases included.
TEST(QuantizerTest, F16RoundingMatchesTheCompiler) {
  std::vector<float> values = {
      0.0f,           -0.0f,          1.0f,
      65504.0f,       65519.0f,       65520.0f,
      1e9f,           -1e9f,          6.1035156e-05f,
      6.0e-05f,       5.9604645e-08f, 2.9802322e-08f,
      2.9802326e-08f, 1e-10f,         std::numeric_limits<float>::infinity()};
  for (float v : Random(20000, 1, 3.0f)) values.push_back(v);
  for (float v : Random(20000, 2, 1e-5f)) values.push_back(v);
  for (float v : values) {
    ASSERT_EQ(F32ToF16(v), test_util::F32ToF16ForTest(v)) << v;
    ASSERT_EQ(F16ToF32(F32ToF16(v)), F16ToF32(test_util::F32ToF16ForTest(v))) << v;
  }
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
}  // namespace moe::kernels
