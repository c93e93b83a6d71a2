// Every op of every backend against the plain reference (kernels/cpu/reference_ops.cc) on random
// inputs at awkward sizes: the CPU backend always, the CUDA backend when this machine has a GPU
// (otherwise those cases skip, saying why). Buffers go in and out through the Backend interface
// itself, so its copies are tested too.
#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "tests/kernels/test_util.h"

namespace moe::kernels {
namespace {

using test_util::F32ToF16ForTest;
using test_util::Random;
using test_util::RelErr;
using test_util::Weights;


// x rounded to dtype and widened back: what a 16-bit GEMM multiplies.
std::vector<float> RoundTo(DType dtype, std::vector<float> x) {
  for (float& v : x) {
    if (dtype == DType::kBF16) v = BF16ToF32(F32ToBF16(v));
    if (dtype == DType::kF16) v = F16ToF32(F32ToF16ForTest(v));
  }
  return x;
}

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // "cpu_f32": the CPU backend with float32 products (--cpu-numerics f32).
    DeviceOptions options;
    options.device = GetParam() == "cpu_f32" ? "cpu" : GetParam();
    if (GetParam() == "cpu_f32") options.cpu_numerics = MatMulNumerics::kFloat32;
    auto backend = MakeBackend(options);
    if (!backend.ok() && GetParam() == "cuda") {
      GTEST_SKIP() << "no CUDA device: " << backend.status().message();
    }
    ASSERT_TRUE(backend.ok()) << backend.status();
    b_ = std::move(*backend);
  }
  void TearDown() override {
    if (b_) {
      for (void* p : buffers_) b_->Release(p);
      EXPECT_TRUE(b_->Sync().ok()) << b_->Sync();
    }
  }

  // A copy of host in the backend's memory.
  template <typename T>
  T* In(const std::vector<T>& host) {
    void* p = b_->Allocate(std::max<size_t>(1, host.size()) * sizeof(T));
    EXPECT_NE(p, nullptr);
    buffers_.push_back(p);
    b_->ToDevice(p, host.data(), host.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> Out(const T* p, size_t n) {
    std::vector<T> host(n);
    b_->ToHost(host.data(), p, n * sizeof(T));
    EXPECT_TRUE(b_->Sync().ok()) << b_->Sync();
    return host;
  }

  std::unique_ptr<Backend> b_;
  std::vector<void*> buffers_;
};

// Small weights, as a trained model's.
Weights MakeWeights(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  return test_util::MakeWeights(dtype, rows, cols, seed, 0.2f);
}

TEST_P(BackendTest, MatMulEveryDType) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t m : {1, 3, 17, 70}) {
      const int64_t rows = 45, cols = 97;
      Weights w = MakeWeights(dtype, rows, cols, 7);
      auto uploaded = b_->Upload(w.matrix);
      ASSERT_TRUE(uploaded.ok()) << uploaded.status();
      const std::vector<float> x = Random(m * cols, 11 + static_cast<uint32_t>(m));
      float* y = In(std::vector<float>(static_cast<size_t>(m * rows)));
      b_->MatMul(In(x), m, *uploaded, y);
      // A GEMM that rounds x to the weights' type is held to a reference on the same inputs.
      const std::vector<float> x_ref = b_->RoundsActivations(dtype) ? RoundTo(dtype, x) : x;
      std::vector<float> want(static_cast<size_t>(m * rows));
      reference::MatMul(x_ref.data(), m, WeightMatrix{DType::kF32, w.f32.data(), rows, cols}, want.data());
      EXPECT_LT(RelErr(Out(y, want.size()), want), 1e-5) << DTypeName(dtype) << " m=" << m;
    }
  }
}

// Quantized at upload (WeightFormat): the CPU's product equals the scalar reference of the
// quantized arithmetic on the same levels, bit for bit; CUDA refuses, saying so; a weight for
// lookups or float32 products cannot be quantized.
TEST_P(BackendTest, MatMulQuantizedAtUpload) {
  if (GetParam() != "cuda" && !quant::Available()) {
    GTEST_SKIP() << "SKIP: this CPU lacks AVX2/FMA/F16C: no quantized kernels";
  }
  const int64_t rows = 45, cols = 197;
  Weights w = MakeWeights(DType::kBF16, rows, cols, 13);
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    auto uploaded = b_->Upload(w.matrix, WeightUse::kMatMul, format);
    if (GetParam() == "cuda") {
      ASSERT_FALSE(uploaded.ok());
      EXPECT_NE(std::string(uploaded.status().message()).find("holds no quantized weights"),
                std::string::npos);
      continue;
    }
    ASSERT_TRUE(uploaded.ok()) << uploaded.status();
    EXPECT_EQ(uploaded->dtype, HeldDType(DType::kBF16, format));
    // The levels the upload computed, row-major, for the reference.
    const DType dtype = uploaded->dtype;
    std::vector<uint8_t> q(static_cast<size_t>(QuantDataBytes(dtype, rows, cols)));
    std::vector<float> scales(rows);
    std::vector<uint16_t> scales16(static_cast<size_t>(rows * QuantGroups(cols))),
        mins16(scales16.size());
    WeightMatrix ref{dtype, q.data(), rows, cols};
    if (dtype == DType::kI8) {
      QuantizeRowsInt8(w.matrix, 0, rows, reinterpret_cast<int8_t*>(q.data()), scales.data());
      ref.scales = scales.data();
    } else {
      QuantizeRowsInt4(w.matrix, 0, rows, q.data(), scales16.data(), mins16.data());
      ref.scales = scales16.data();
      ref.mins = mins16.data();
    }
    for (int64_t m : {1, 4, 33}) {
      const std::vector<float> x = Random(m * cols, 17 + static_cast<uint32_t>(m));
      float* y = In(std::vector<float>(static_cast<size_t>(m * rows)));
      b_->MatMul(In(x), m, *uploaded, y);
      std::vector<float> want(static_cast<size_t>(m * rows));
      reference::QuantizedMatMul(x.data(), m, ref, want.data());
      const std::vector<float> got = Out(y, want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
          << WeightFormatName(format) << " m=" << m;
    }
    b_->FreeWeight(*uploaded);
  }
  if (GetParam() != "cuda") {
    EXPECT_FALSE(b_->Upload(w.matrix, WeightUse::kLookup, WeightFormat::kInt8).ok());
    EXPECT_FALSE(b_->Upload(w.matrix, WeightUse::kMatMulF32, WeightFormat::kInt4).ok());
  }
}

TEST_P(BackendTest, MatMulAsF32UploadKeepsFloat32Precision) {
  Weights w = MakeWeights(DType::kBF16, 8, 129, 3);
  auto uploaded = b_->Upload(w.matrix, WeightUse::kMatMulF32);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  const std::vector<float> x = Random(5 * 129, 4);
  float* y = In(std::vector<float>(5 * 8));
  b_->MatMul(In(x), 5, *uploaded, y);
  std::vector<float> want(5 * 8);
  reference::MatMul(x.data(), 5, WeightMatrix{DType::kF32, w.f32.data(), 8, 129}, want.data());
  EXPECT_LT(RelErr(Out(y, want.size()), want), 1e-6);
}

TEST_P(BackendTest, EmbedEveryDType) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    Weights table = MakeWeights(dtype, 50, 33, 5);
    auto uploaded = b_->Upload(table.matrix, WeightUse::kLookup);
    ASSERT_TRUE(uploaded.ok()) << uploaded.status();
    const std::vector<int32_t> tokens = {49, 0, 7, 7, 21};
    float* out = In(std::vector<float>(tokens.size() * 33));
    b_->Embed(*uploaded, In(tokens), static_cast<int64_t>(tokens.size()), out);
    const std::vector<float> got = Out(out, tokens.size() * 33);
    for (size_t i = 0; i < tokens.size(); ++i) {
      for (int c = 0; c < 33; ++c) {
        ASSERT_EQ(got[i * 33 + c], table.f32[tokens[i] * 33 + c]) << DTypeName(dtype);
      }
    }
  }
}

TEST_P(BackendTest, RmsNorm) {
  for (int64_t n : {1, 37, 1000, 4096}) {
    const int64_t m = 5;
    const std::vector<float> x = Random(m * n, 1, 3.0f), w = Random(n, 2);
    float* y = In(std::vector<float>(static_cast<size_t>(m * n)));
    b_->RmsNorm(In(x), In(w), m, n, 1e-5f, y);
    std::vector<float> want(static_cast<size_t>(m * n));
    reference::RmsNorm(x.data(), w.data(), m, n, 1e-5f, want.data());
    EXPECT_LT(RelErr(Out(y, want.size()), want), 1e-6) << "n=" << n;
  }
}

TEST_P(BackendTest, RopeAtLargePositions) {
  const int heads = 3, head_dim = 24;
  const std::vector<int32_t> positions = {0, 1, 17, 4095, 31999, 2};
  const int64_t m = static_cast<int64_t>(positions.size());
  std::vector<float> x = Random(m * heads * head_dim, 9);
  float* dev = In(x);
  b_->ApplyRope(dev, In(positions), m, heads, head_dim, 1e6f);
  reference::ApplyRope(x.data(), positions.data(), m, heads, head_dim, 1e6f);
  EXPECT_LT(RelErr(Out(dev, x.size()), x), 1e-5);
}

TEST_P(BackendTest, SiluMulAndAdd) {
  const std::vector<float> g = Random(1001, 1, 4.0f), u = Random(1001, 2);
  float* out = In(std::vector<float>(1001));
  b_->SiluMul(In(g), In(u), 1001, out);
  std::vector<float> want(1001);
  reference::SiluMul(g.data(), u.data(), 1001, want.data());
  EXPECT_LT(RelErr(Out(out, 1001), want), 1e-6);
  b_->AddInPlace(out, In(g), 1001);
  for (size_t i = 0; i < want.size(); ++i) want[i] += g[i];
  EXPECT_LT(RelErr(Out(out, 1001), want), 1e-6);
}

struct AttentionCase {
  int64_t n_new, first_pos;
  int heads, kv_heads, head_dim;
  int64_t window;
};

TEST_P(BackendTest, AttentionPrefillDecodeGqaWindow) {
  const AttentionCase cases[] = {
      {1, 0, 4, 4, 16, 0},      // the first token sees itself
      {7, 0, 6, 2, 24, 0},      // prefill, GQA 3:1, head_dim not a multiple of 32
      {5, 9, 4, 1, 128, 4},     // chunk after a cache, window shorter than the chunk
      {1, 300, 8, 2, 128, 0},   // decode over a long cache (CUDA: keys split over 2 blocks)
      {1, 5000, 4, 1, 128, 0},  // decode, CUDA splits the keys 39 ways
      {2, 3000, 8, 2, 64, 1000},  // two rows, window, split 7 ways with uneven slices
      {1, 300, 8, 2, 128, 64},  // decode, sliding window
      {33, 40, 2, 2, 256, 50},  // widest head
      {3, 2, 4, 2, 8, 0},       // tiny head
  };
  for (const AttentionCase& c : cases) {
    AttentionShape s{c.n_new, c.first_pos, c.heads, c.kv_heads, c.head_dim, c.window};
    const int64_t keys = c.first_pos + c.n_new;
    const std::vector<float> q = Random(c.n_new * c.heads * c.head_dim, 1);
    const std::vector<float> k = Random(keys * c.kv_heads * c.head_dim, 2);
    const std::vector<float> v = Random(keys * c.kv_heads * c.head_dim, 3);
    float* out = In(std::vector<float>(q.size()));
    b_->Attention(In(q), In(k), In(v), s, out);
    std::vector<float> want(q.size());
    reference::Attention(q.data(), k.data(), v.data(), s, want.data());
    EXPECT_LT(RelErr(Out(out, want.size()), want), 1e-5)
        << "n_new=" << c.n_new << " first_pos=" << c.first_pos << " head_dim=" << c.head_dim
        << " window=" << c.window;
  }
}

TEST_P(BackendTest, RouteTopKMatchesIncludingTies) {
  for (auto [n_experts, top_k] : {std::pair{8, 2}, {6, 3}, {4, 1}, {64, 8}}) {
    const int64_t n = 77;
    std::vector<float> logits = Random(n * n_experts, 5, 2.0f);
    for (int e = 0; e < n_experts; ++e) logits[e] = 0.5f;  // token 0: all tied
    logits[n_experts + 1] = logits[n_experts + 2];          // token 1: one tie
    int32_t* experts = In(std::vector<int32_t>(n * top_k));
    float* weights = In(std::vector<float>(n * top_k));
    b_->RouteTopK(In(logits), n, n_experts, top_k, experts, weights);
    std::vector<int32_t> want_e(n * top_k);
    std::vector<float> want_w(n * top_k);
    reference::RouteTopK(logits.data(), n, n_experts, top_k, want_e.data(), want_w.data());
    EXPECT_EQ(Out(experts, want_e.size()), want_e) << n_experts << " experts, top " << top_k;
    EXPECT_LT(RelErr(Out(weights, want_w.size()), want_w), 1e-6);
  }
}

// Sampling candidates: exact ids and values (a selection, no arithmetic), ties to the lower id,
// NaN ranked last beside -inf, +inf first, and the finite flag per row.
TEST_P(BackendTest, TopKSamplingCandidatesIncludingTiesAndNonFinite) {
  const float inf = std::numeric_limits<float>::infinity();
  for (auto [vocab, k] : {std::pair<int64_t, int>{1, 1}, {7, 7}, {1000, 1}, {1000, 3}, {32000, 1},
                          {32003, 40}, {32000, 1024}, {4099, 257}}) {
    const int64_t rows = 6;
    std::vector<float> logits = Random(rows * vocab, 11, 3.0f);
    // Row 1: coarse values, so ties abound; row 2: all equal; row 3: a NaN, a +inf and a -inf;
    // row 4: every logit NaN; row 5: two +inf.
    for (int64_t i = 0; i < vocab; ++i) {
      logits[vocab + i] = std::round(logits[vocab + i]);
      logits[2 * vocab + i] = 0.25f;
      logits[4 * vocab + i] = std::nanf("");
    }
    logits[3 * vocab + vocab / 2] = std::nanf("");
    logits[3 * vocab + vocab / 3] = inf;
    logits[3 * vocab + vocab - 1] = -inf;
    logits[5 * vocab + vocab - 1] = inf;
    logits[5 * vocab + vocab / 4] = inf;
    std::vector<float> want_v(rows * k);
    std::vector<int32_t> want_i(rows * k), want_f(rows);
    reference::TopK(logits.data(), rows, vocab, k, want_v.data(), want_i.data(), want_f.data());
    float* values = In(std::vector<float>(rows * k));
    int32_t* ids = In(std::vector<int32_t>(rows * k));
    int32_t* finite = In(std::vector<int32_t>(rows));
    b_->TopK(In(logits), rows, vocab, k, values, ids, finite);
    EXPECT_EQ(Out(ids, want_i.size()), want_i) << "vocab " << vocab << ", k " << k;
    const std::vector<float> got_v = Out(values, want_v.size());
    EXPECT_EQ(std::memcmp(got_v.data(), want_v.data(), want_v.size() * sizeof(float)), 0)
        << "vocab " << vocab << ", k " << k;
    EXPECT_EQ(Out(finite, want_f.size()), want_f) << "vocab " << vocab << ", k " << k;
  }
  // The reference itself on a hand-made row.
  const std::vector<float> row = {1.0f, std::nanf(""), 3.0f, 3.0f, -inf, 2.0f};
  float v[6];
  int32_t i[6], f = 1;
  reference::TopK(row.data(), 1, 6, 6, v, i, &f);
  EXPECT_EQ(std::vector<int32_t>(i, i + 6), (std::vector<int32_t>{2, 3, 5, 0, 1, 4}));
  EXPECT_EQ(f, 0);
}

TEST_P(BackendTest, GatherAndCombineRows) {
  const int64_t n = 9, hidden = 70;
  const int k = 2;
  const std::vector<float> x = Random(n * hidden, 1);
  // A permutation with repeats, as a dispatch makes: every token twice.
  std::vector<int64_t> source(n * k);
  for (int64_t r = 0; r < n * k; ++r) source[r] = (r * 5) % n;
  float* rows = In(std::vector<float>(n * k * hidden));
  b_->GatherRows(In(x), In(source), n * k, hidden, rows);
  std::vector<float> want_rows(n * k * hidden);
  reference::GatherRows(x.data(), source.data(), n * k, hidden, want_rows.data());
  EXPECT_EQ(Out(rows, want_rows.size()), want_rows);

  std::vector<int64_t> slot(n * k);
  std::vector<int32_t> experts(n * k);
  std::vector<float> weights(n * k);
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < k; ++j) {
      slot[t * k + j] = (t * k + j * 7) % (n * k);
      experts[t * k + j] = static_cast<int32_t>((t + 3 * (k - j)) % 8);  // often descending
      weights[t * k + j] = 0.25f + 0.5f * static_cast<float>(j);
    }
  }
  const std::vector<float> expert_out = Random(n * k * hidden, 2);
  std::vector<float> residual = Random(n * hidden, 3);
  float* res = In(residual);
  b_->CombineRows(In(expert_out), In(slot), In(experts), In(weights), n, k, hidden, res);
  reference::CombineRows(expert_out.data(), slot.data(), experts.data(), weights.data(), n, k,
                         hidden, residual.data());
  EXPECT_EQ(Out(res, residual.size()), residual);  // same operations in the same order
}

TEST_P(BackendTest, CopiesAndGrowingArrays) {
  BackendArray<float> a(b_.get());
  ASSERT_TRUE(a.Reserve(10));
  const std::vector<float> x = Random(10, 1);
  b_->ToDevice(a.data(), x.data(), 10 * sizeof(float));
  ASSERT_TRUE(a.Reserve(1000, /*keep=*/true));
  EXPECT_EQ(Out(a.data(), 10), x);
  BackendArray<float> moved = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(Out(moved.data(), 10), x);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values("cpu", "cpu_f32", "cuda"),
                         [](const auto& info) { return info.param; });

TEST(MakeBackendTest, UnknownDeviceIsOneLine) {
  auto b = MakeBackend(DeviceOptions{"tpu", -1});
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "unknown device 'tpu' (cpu or cuda)");
}

}  // namespace
}  // namespace moe::kernels
