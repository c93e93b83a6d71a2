// Every fast CPU kernel against its plain reference, on random inputs at awkward sizes, every
// weight dtype, one and several threads.
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ops.h"
#include "tests/kernels/test_util.h"

namespace moe::kernels {
namespace {

using test_util::Random;
using test_util::RelErr;


class MatMulTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t, int64_t, int>> {};

TEST_P(MatMulTest, MatchesReference) {
  const auto [dtype, m, n, k, threads] = GetParam();
  SetCpuThreads(threads);
  const test_util::Weights w = test_util::MakeWeights(dtype, n, k, 7, 0.5f);
  const std::vector<float> x = Random(m * k, 11);
  std::vector<float> got(static_cast<size_t>(m * n)), want(static_cast<size_t>(m * n));
  MatMul(x.data(), m, w.matrix, got.data());
  reference::MatMul(x.data(), m, w.matrix, want.data());
  EXPECT_LT(RelErr(got, want), 1e-6) << DTypeName(dtype) << " m=" << m << " n=" << n << " k=" << k;
}

INSTANTIATE_TEST_SUITE_P(
    AwkwardSizes, MatMulTest,
    ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values<int64_t>(1, 2, 3, 4, 5, 17, 130),  // GEMV and tiled paths
                       ::testing::Values<int64_t>(1, 7, 33, 301),
                       ::testing::Values<int64_t>(1, 15, 64, 257),
                       ::testing::Values(1, 3)));

TEST(DTypeTest, F16DecodesEveryClass) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    uint16_t h = static_cast<uint16_t>(bits);
    _Float16 ref;
    std::memcpy(&ref, &h, 2);
    const float want = static_cast<float>(ref);
    const float got = F16ToF32(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      ASSERT_EQ(got, want) << std::hex << bits;
    }
  }
}

TEST(DTypeTest, BF16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(BF16ToF32(F32ToBF16(3.140625f)), 3.140625f);
  uint32_t bits = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81: rounds to even
  float f;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(F32ToBF16(f), 0x3f80);
  bits = 0x3f818000;
  std::memcpy(&f, &bits, 4);
  EXPECT_EQ(F32ToBF16(f), 0x3f82);
}

TEST(OpsTest, RmsNormMatchesReference) {
  for (int64_t n : {1, 15, 64, 4097}) {
    for (int64_t m : {1, 3, 40}) {
      const auto x = Random(m * n, 3, 2.0f);
      const auto w = Random(n, 4);
      std::vector<float> got(x.size()), want(x.size());
      RmsNorm(x.data(), w.data(), m, n, 1e-5f, got.data());
      reference::RmsNorm(x.data(), w.data(), m, n, 1e-5f, want.data());
      EXPECT_LT(RelErr(got, want), 1e-6) << m << "x" << n;
    }
  }
}

TEST(OpsTest, RopeMatchesReference) {
  for (int head_dim : {2, 16, 34, 128}) {
    const int heads = 3;
    const int64_t m = 9;
    std::vector<int32_t> pos(m);
    for (int64_t i = 0; i < m; ++i) pos[i] = static_cast<int32_t>(i * 37 + 5);
    auto got = Random(m * heads * head_dim, 5);
    auto want = got;
    ApplyRope(got.data(), pos.data(), m, heads, head_dim, 1e6f);
    reference::ApplyRope(want.data(), pos.data(), m, heads, head_dim, 1e6f);
    EXPECT_LT(RelErr(got, want), 1e-6) << head_dim;
  }
}

TEST(OpsTest, RopeRotatesHalvesAsHuggingFace) {
  // head_dim 4, theta 1: inv_freq = [1, 1]; position 1 rotates each (d, d + 2) pair by 1 radian.
  std::vector<float> x = {1, 0, 0, 0};
  const int32_t pos[] = {1};
  reference::ApplyRope(x.data(), pos, 1, 1, 4, 1.0f);
  EXPECT_NEAR(x[0], std::cos(1.0f), 1e-6);
  EXPECT_NEAR(x[2], std::sin(1.0f), 1e-6);
  EXPECT_EQ(x[1], 0.0f);
}

TEST(OpsTest, SiluMulHandlesHugeGates) {
  // exp(-g) overflows float for g < -88: silu must go to -0, not to g.
  std::vector<float> g = {-1e30f, -1e4f, -500.0f, -200.0f, -100.0f, -88.5f, 88.5f, 200.0f, 1e4f};
  for (int i = 0; i < 32; ++i) g.push_back(-90.0f - 10.0f * i);  // fills whole SIMD vectors
  const std::vector<float> up(g.size(), 2.0f);
  std::vector<float> got(g.size()), want(g.size());
  SiluMul(g.data(), up.data(), static_cast<int64_t>(g.size()), got.data());
  reference::SiluMul(g.data(), up.data(), static_cast<int64_t>(g.size()), want.data());
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5f * std::max(1.0f, std::fabs(want[i]))) << "gate " << g[i];
  }
}

TEST(OpsTest, SiluMulMatchesReference) {
  for (int64_t n : {1, 15, 17, 40000}) {
    const auto g = Random(n, 8, 3.0f), u = Random(n, 9);
    std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    SiluMul(g.data(), u.data(), n, got.data());
    reference::SiluMul(g.data(), u.data(), n, want.data());
    EXPECT_LT(RelErr(got, want), 1e-6) << n;
  }
}

class AttentionTest
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int, int, int, int64_t>> {};

TEST_P(AttentionTest, MatchesReference) {
  const auto [n_new, first_pos, heads, kv_heads, head_dim, window] = GetParam();
  SetCpuThreads(2);
  AttentionShape s{n_new, first_pos, heads, kv_heads, head_dim, window};
  const int64_t ctx = first_pos + n_new;
  const auto q = Random(n_new * heads * head_dim, 21);
  const auto k = Random(ctx * kv_heads * head_dim, 22, 2.0f);
  const auto v = Random(ctx * kv_heads * head_dim, 23);
  std::vector<float> got(q.size()), want(q.size());
  Attention(q.data(), k.data(), v.data(), s, got.data());
  reference::Attention(q.data(), k.data(), v.data(), s, want.data());
  EXPECT_LT(RelErr(got, want), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(std::make_tuple(1, 0, 1, 1, 8, 0), std::make_tuple(17, 0, 4, 1, 16, 0),
                      std::make_tuple(1, 40, 8, 2, 32, 0), std::make_tuple(1, 40, 8, 2, 32, 7),
                      std::make_tuple(33, 0, 6, 3, 10, 5), std::make_tuple(5, 20, 4, 4, 64, 8),
                      std::make_tuple(9, 3, 2, 1, 6, 1),
                      // Several query blocks (256 rows each), with and without a window.
                      std::make_tuple(600, 7, 4, 2, 16, 0), std::make_tuple(600, 7, 4, 2, 16, 100),
                      std::make_tuple(257, 300, 2, 1, 8, 270),
                      // Decode rows (AttentionFewRows): Mixtral's heads, a window, 8 rows at once.
                      std::make_tuple(1, 300, 32, 8, 128, 0),
                      std::make_tuple(1, 300, 32, 8, 128, 57), std::make_tuple(8, 100, 8, 2, 36, 0),
                      std::make_tuple(8, 100, 8, 2, 36, 20),
                      std::make_tuple(9, 100, 8, 2, 36, 20)));

TEST(OpsTest, SlidingWindowHidesOldKeys) {
  // With window 2 the last query sees only the last two values: the first value must not leak.
  AttentionShape s{1, 3, 1, 1, 2, 2};
  const std::vector<float> q = {0, 0};
  const std::vector<float> k(8, 0.0f);
  const std::vector<float> v = {100, 100, 100, 100, 1, 1, 3, 3};
  std::vector<float> out(2);
  Attention(q.data(), k.data(), v.data(), s, out.data());
  EXPECT_FLOAT_EQ(out[0], 2.0f);  // mean of 1 and 3 (uniform scores), never 100
}

TEST(OpsTest, SoftmaxMatchesReference) {
  auto x = Random(1001, 30, 10.0f);
  auto y = x;
  Softmax(x.data(), 1001);
  reference::Softmax(y.data(), 1001);
  EXPECT_LT(RelErr(x, y), 1e-6);
}

}  // namespace
}  // namespace moe::kernels
