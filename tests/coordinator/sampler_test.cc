#include "coordinator/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace moe {
namespace {

const std::vector<float> kLogits = {0.0f, 3.0f, 2.5f, -1.0f, 2.9f, 1.0f};

TEST(SamplerTest, GreedyTakesTheFirstMaximum) {
  Sampler s({});
  EXPECT_EQ(s.Sample(kLogits.data(), 6), 1);
  const std::vector<float> tie = {1.0f, 5.0f, 5.0f};
  EXPECT_EQ(s.Sample(tie.data(), 3), 1);
}

TEST(SamplerTest, SameSeedSameDraws) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int> da, db;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.Sample(kLogits.data(), 6));
    db.push_back(b.Sample(kLogits.data(), 6));
  }
  EXPECT_EQ(da, db);
  p.seed = 43;
  Sampler c(p);
  std::vector<int> dc;
  for (int i = 0; i < 200; ++i) dc.push_back(c.Sample(kLogits.data(), 6));
  EXPECT_NE(da, dc);
}

std::map<int, int> Histogram(SamplingParams p, int n) {
  Sampler s(p);
  std::map<int, int> h;
  for (int i = 0; i < n; ++i) ++h[s.Sample(kLogits.data(), 6)];
  return h;
}

TEST(SamplerTest, TopKKeepsOnlyTheKBest) {
  SamplingParams p;
  p.temperature = 5.0f;  // flat enough that every token would appear without top-k
  p.top_k = 2;
  const auto h = Histogram(p, 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(4));
  p.top_k = 0;
  EXPECT_EQ(Histogram(p, 2000).size(), 6u);
}

TEST(SamplerTest, TopPKeepsTheNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  // Probabilities: 3.0 -> .37, 2.9 -> .33, 2.5 -> .22, rest .08: top_p .6 needs the first two.
  p.top_p = 0.6f;
  const auto h = Histogram(p, 3000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(4));
  // The sampled frequencies follow the renormalised probabilities (0.37 / 0.70 = 0.525).
  EXPECT_NEAR(h.at(1) / 3000.0, 0.525, 0.04);
}

TEST(SamplerTest, NonFiniteLogits) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  SamplingParams p;
  p.temperature = 1.0f;
  for (const SamplingParams& params : {SamplingParams{}, p}) {
    Sampler s(params);
    const std::vector<float> with_inf = {0.0f, inf, 1.0f, 2.0f};
    EXPECT_EQ(s.Sample(with_inf.data(), 4), 1);
    const std::vector<float> with_nan = {nan, 0.5f, nan, 3.0f, -1.0f};
    for (int i = 0; i < 50; ++i) {
      const int id = s.Sample(with_nan.data(), 5);
      EXPECT_TRUE(id == 1 || id == 3 || id == 4) << id;
    }
  }
}

TEST(SamplerTest, TinyTopPIsGreedy) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 1e-6f;
  p.top_k = 3;
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample(kLogits.data(), 6), 1);
}

TEST(SamplerTest, ValidatesParameters) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.temperature = -1;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.top_p = 0;
  EXPECT_FALSE(p.Validate().ok());
  p.top_p = 1.5f;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.top_k = -2;
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace moe
