// The packed AVX-512 kernels (kernels/cpu/packed_matmul.h) against the plain reference, for every
// dtype, every kind of products (float32, vdpbf16ps, AMX tiles), every m from 1 to 130 and awkward shapes (k not a whole group, a partial
// last panel, several cache blocks of k); and their batch invariance: a row's result, bit for
// bit, whatever else shares its product and however many threads run it. Skipped, saying why, on
// CPUs without AVX-512, and for BF16 products the CPU lacks (AVX512_BF16, AMX).
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops.h"
#include "tests/kernels/test_util.h"

namespace moe::kernels {
namespace {

using test_util::Random;
using test_util::RelErr;

// x rounded to BF16 and widened back: what the BF16 dot product multiplies.
std::vector<float> RoundToBf16(std::vector<float> x) {
  for (float& v : x) v = BF16ToF32(F32ToBF16(v));
  return x;
}

// A packed copy of weights that owns its storage.
struct PackedWeights {
  std::vector<char> storage;
  WeightMatrix matrix;
};
PackedWeights PackForTest(const WeightMatrix& w) {
  PackedWeights p;
  p.storage.resize(packed::PackedBytes(w) + 64);
  void* aligned = p.storage.data() + (64 - reinterpret_cast<uintptr_t>(p.storage.data()) % 64) % 64;
  p.matrix = packed::Pack(w, aligned);
  return p;
}

using packed::Products;

const char* Name(Products products) {
  switch (products) {
    case Products::kBf16Dot: return "vdpbf16ps";
    case Products::kBf16Amx: return "amx";
    case Products::kFloat32: break;
  }
  return "f32";
}

// Whether this CPU computes these products; the reason it does not, else empty.
std::string Unsupported(Products products) {
  if (products == Products::kBf16Dot && !packed::HasBf16Dot()) return "this CPU lacks AVX512_BF16";
  if (products == Products::kBf16Amx && !packed::HasAmx()) {
    return "this CPU lacks AMX-BF16 (or the OS refused its tile state)";
  }
  return "";
}

std::string Describe(DType dtype, Products products, int64_t m, int64_t n, int64_t k) {
  return std::string(DTypeName(dtype)) + " " + Name(products) + " m=" + std::to_string(m) +
         " n=" + std::to_string(n) + " k=" + std::to_string(k);
}

class PackedMatMulTest : public ::testing::TestWithParam<std::tuple<DType, Products>> {
 protected:
  void SetUp() override {
    if (!packed::Available()) GTEST_SKIP() << "SKIP: this CPU lacks AVX-512; the fallback kernels run";
    std::tie(dtype_, products_) = GetParam();
    // Other dtypes ignore the kind of products (they are always float32), so they run anywhere.
    const std::string why = dtype_ == DType::kBF16 ? Unsupported(products_) : "";
    if (!why.empty()) GTEST_SKIP() << "SKIP: " << why;
  }
  // Whether this case multiplies rounded activations (the BF16 instructions).
  bool Rounds() const { return products_ != Products::kFloat32 && dtype_ == DType::kBF16; }

  // The packed product against the reference on the inputs the kernel multiplies, element by
  // element within the worst-case bound of a float32 sum of k products: k units in the last
  // place of the sum of their magnitudes. A wrong or missing term costs about one k-th of that
  // sum, far above the bound for every k tested here.
  void ExpectMatchesReference(int64_t m, int64_t n, int64_t k, uint32_t seed) {
    const test_util::Weights w = test_util::MakeWeights(dtype_, n, k, seed, 0.5f);
    const PackedWeights p = PackForTest(w.matrix);
    const std::vector<float> x = Random(m * k, seed + 1);
    std::vector<float> got(static_cast<size_t>(m * n)), want(got.size());
    packed::MatMul(x.data(), m, p.matrix, got.data(), products_);
    const std::vector<float> x_ref = Rounds() ? RoundToBf16(x) : x;
    reference::MatMul(x_ref.data(), m, WeightMatrix{DType::kF32, w.f32.data(), n, k}, want.data());
    const double ulp = std::ldexp(1.0, -24);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double magnitude = 0;
        for (int64_t c = 0; c < k; ++c) magnitude += std::fabs(x_ref[i * k + c] * double{w.f32[j * k + c]});
        ASSERT_LE(std::fabs(got[i * n + j] - double{want[i * n + j]}), (k + 1) * ulp * magnitude)
            << Describe(dtype_, products_, m, n, k) << " at row " << i << " column " << j;
      }
    }
  }

  DType dtype_ = DType::kF32;
  Products products_ = Products::kFloat32;
};

TEST_P(PackedMatMulTest, EveryRowCountMatchesTheReference) {
  SetCpuThreads(2);
  // k = 301: an odd k (a BF16 pair half padded), two cache blocks of k for F32 and F16, a last
  // AMX step of 7 pairs; n = 97: two whole panels and one of a single column.
  for (int64_t m = 1; m <= 130; ++m) ExpectMatchesReference(m, 97, 301, static_cast<uint32_t>(m));
}

TEST_P(PackedMatMulTest, AwkwardShapesMatchTheReference) {
  for (int threads : {1, 3}) {
    SetCpuThreads(threads);
    for (int64_t n : {1, 7, 47, 48, 49, 301}) {
      for (int64_t k : {1, 2, 15, 33, 64, 513, 1030}) {
        for (int64_t m : {1, 5, 8, 9, 17}) ExpectMatchesReference(m, n, k, static_cast<uint32_t>(n * k + m));
      }
    }
  }
}

// Row i of an m-row product equals row i computed alone, bit for bit, for every m from 1 to 130;
// and so does a batch of the same rows in reverse order, on one thread and on three.
TEST_P(PackedMatMulTest, RowsAreBatchInvariant) {
  const int64_t n = 97, k = 601;
  const test_util::Weights w = test_util::MakeWeights(dtype_, n, k, 5, 0.5f);
  const PackedWeights p = PackForTest(w.matrix);
  const std::vector<float> x = Random(130 * k, 6);
  std::vector<float> alone(static_cast<size_t>(130 * n));
  SetCpuThreads(1);
  for (int64_t i = 0; i < 130; ++i) {
    packed::MatMul(x.data() + i * k, 1, p.matrix, alone.data() + i * n, products_);
  }
  for (int threads : {1, 3}) {
    SetCpuThreads(threads);
    for (int64_t m = 1; m <= 130; ++m) {
      std::vector<float> batch(static_cast<size_t>(m * n));
      packed::MatMul(x.data(), m, p.matrix, batch.data(), products_);
      ASSERT_EQ(std::memcmp(batch.data(), alone.data(), batch.size() * sizeof(float)), 0)
          << Describe(dtype_, products_, m, n, k) << " threads=" << threads;
    }
    std::vector<float> reversed_x(static_cast<size_t>(130 * k));
    for (int64_t i = 0; i < 130; ++i) std::memcpy(&reversed_x[(129 - i) * k], &x[i * k], k * sizeof(float));
    std::vector<float> reversed(static_cast<size_t>(130 * n));
    packed::MatMul(reversed_x.data(), 130, p.matrix, reversed.data(), products_);
    for (int64_t i = 0; i < 130; ++i) {
      ASSERT_EQ(std::memcmp(&reversed[(129 - i) * n], &alone[i * n], n * sizeof(float)), 0)
          << "row " << i << " moved to " << 129 - i << ", threads=" << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    DTypesAndNumerics, PackedMatMulTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(Products::kFloat32, Products::kBf16Dot, Products::kBf16Amx)),
    [](const auto& info) {
      return std::string(DTypeName(std::get<0>(info.param))) + "_" + Name(std::get<1>(info.param));
    });

// Several row blocks (m above 256, split in two), AMX's whole tiles of rows past m, and k in
// several AMX cache blocks with a partial last step.
TEST_P(PackedMatMulTest, ManyRowsMatchTheReference) {
  SetCpuThreads(2);
  ExpectMatchesReference(300, 50, 1030, 21);
  ExpectMatchesReference(257, 49, 64, 22);
}

// The rounded paths really multiply rounded activations (they are not the f32 path under another
// name), the f32 path really does not round, and AMX is not vdpbf16ps under another name: the two
// round their sums differently, so they differ in the last bits.
TEST(PackedMatMulNumericsTest, RoundedAndFloat32PathsDiffer) {
  if (!packed::Available() || !packed::HasBf16Dot()) {
    GTEST_SKIP() << "SKIP: this CPU lacks AVX512_BF16 (or AVX-512): no BF16 dot product to test";
  }
  const int64_t m = 3, n = 50, k = 300;
  const test_util::Weights w = test_util::MakeWeights(DType::kBF16, n, k, 9, 0.5f);
  const PackedWeights p = PackForTest(w.matrix);
  const std::vector<float> x = Random(m * k, 10);
  const WeightMatrix exact{DType::kF32, w.f32.data(), n, k};
  std::vector<float> f32(static_cast<size_t>(m * n)), ref(f32.size()), ref_rounded(f32.size());
  packed::MatMul(x.data(), m, p.matrix, f32.data(), Products::kFloat32);
  reference::MatMul(x.data(), m, exact, ref.data());
  reference::MatMul(RoundToBf16(x).data(), m, exact, ref_rounded.data());
  EXPECT_LT(RelErr(f32, ref), 1e-6);
  std::vector<std::vector<float>> rounded;
  for (Products products : {Products::kBf16Dot, Products::kBf16Amx}) {
    if (!Unsupported(products).empty()) continue;
    rounded.emplace_back(f32.size());
    packed::MatMul(x.data(), m, p.matrix, rounded.back().data(), products);
    EXPECT_LT(RelErr(rounded.back(), ref_rounded), 1e-6) << Name(products);
    EXPECT_GT(RelErr(rounded.back(), ref), 1e-4) << Name(products);  // BF16 keeps 8 bits
  }
  if (rounded.size() == 2) {
    EXPECT_NE(std::memcmp(rounded[0].data(), rounded[1].data(), f32.size() * sizeof(float)), 0)
        << "AMX and vdpbf16ps gave identical bits: is the AMX path running?";
  }
}

// What Pack writes, element by element: the layout the kernels read (a regression here would
// show as wrong products, but this says where).
TEST(PackedLayoutTest, PanelsHoldColumnsSideBySideInKGroups) {
  if (!packed::Available()) GTEST_SKIP() << "SKIP: this CPU lacks AVX-512";
  const int64_t n = 50, k = 5;  // 2 panels, the second with 2 columns; BF16 k padded to 6
  const test_util::Weights w = test_util::MakeWeights(DType::kBF16, n, k, 12, 1.0f);
  const PackedWeights p = PackForTest(w.matrix);
  const auto* packed_elems = static_cast<const uint16_t*>(p.matrix.data);
  const int64_t k_padded = 6, cols = packed::kPanelCols;
  ASSERT_EQ(packed::PackedBytes(w.matrix), static_cast<size_t>(2 * k_padded * cols * 2));
  for (int64_t j = 0; j < 2 * cols; ++j) {
    for (int64_t kk = 0; kk < k_padded; ++kk) {
      const int64_t panel = j / cols, c = j % cols;
      const uint16_t got = packed_elems[panel * k_padded * cols + ((kk / 2) * cols + c) * 2 + kk % 2];
      const uint16_t want = j < n && kk < k ? w.half[j * k + kk] : 0;
      ASSERT_EQ(got, want) << "column " << j << " k " << kk;
    }
  }
  EXPECT_EQ(p.matrix.layout, WeightLayout::kCpuPanels);
}

}  // namespace
}  // namespace moe::kernels
