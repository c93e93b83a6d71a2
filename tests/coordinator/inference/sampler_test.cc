#include "coordinator/inference/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

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

// What a GPU sends back (Backend::TopK's candidates) must give exactly the draws of the whole
// row, for every setting that asks for candidates, over long draw sequences and with ties.
TEST(SamplerTest, CandidatesGiveTheSameDrawsAsTheWholeRow) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t vocab = 5000;
  std::vector<float> logits(vocab);
  for (float& v : logits) v = normal(rng);
  for (int64_t i = 0; i < vocab; i += 7) logits[i] = std::round(logits[i]);  // ties
  struct Case {
    float temperature;
    int top_k;
    float top_p;
  };
  int compared = 0;
  for (const Case& c : {Case{0, 0, 1}, Case{0.7f, 1, 1}, Case{1.0f, 40, 1}, Case{0.8f, 40, 0.9f},
                        Case{1.3f, 3, 1}, Case{0.5f, 1024, 0.95f}, Case{1.0f, 9000, 0.8f}}) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.seed = 99;
    Sampler whole(p), from_candidates(p);
    const int64_t k = from_candidates.CandidatesNeeded(vocab);
    ASSERT_GT(k, 0);
    std::vector<float> values(k);
    std::vector<int32_t> ids(k);
    int32_t finite = 0;
    kernels::reference::TopK(logits.data(), 1, vocab, static_cast<int>(k), values.data(),
                             ids.data(), &finite);
    ASSERT_EQ(finite, 1);
    for (int draw = 0; draw < 300; ++draw) {
      ASSERT_EQ(from_candidates.SampleFromCandidates(values.data(), ids.data(), k),
                whole.Sample(logits.data(), vocab))
          << "T " << c.temperature << " top_k " << c.top_k << " top_p " << c.top_p << " draw "
          << draw;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 7 * 300);
  // Sampling without top_k needs the whole row.
  SamplingParams p;
  p.temperature = 1.0f;
  EXPECT_EQ(Sampler(p).CandidatesNeeded(vocab), 0);
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

// The penalties as Hugging Face (RepetitionPenaltyLogitsProcessor) and OpenAI (the formula in its
// API reference) write them, in double: the plain reference the sampler's processing must match.
std::vector<float> ReferencePenalties(const std::vector<float>& logits,
                                      const std::vector<int32_t>& prompt,
                                      const std::vector<int32_t>& output, const SamplingParams& p) {
  std::vector<double> x(logits.begin(), logits.end());
  std::set<int32_t> seen(prompt.begin(), prompt.end());
  seen.insert(output.begin(), output.end());
  for (int32_t id : seen)
    x[id] = x[id] < 0 ? x[id] * p.repetition_penalty : x[id] / p.repetition_penalty;
  std::map<int32_t, int> counts;
  for (int32_t id : output) ++counts[id];
  for (const auto& [id, c] : counts)
    x[id] -= c * double{p.frequency_penalty} + double{p.presence_penalty};
  return std::vector<float>(x.begin(), x.end());
}

TEST(SamplerTest, PenaltiesEqualTheReferenceFormulas) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t vocab = 300;
  struct Case {
    float repetition, frequency, presence, temperature;
  };
  int compared = 0;
  for (const Case& c :
       {Case{1.3f, 0, 0, 0}, Case{0.7f, 0, 0, 0}, Case{1, 0.5f, 0, 0}, Case{1, 0, 1.5f, 0},
        Case{1, -0.8f, -1.0f, 0}, Case{1.2f, 0.4f, 0.6f, 0}, Case{1.1f, 0.3f, 0.2f, 0.9f}}) {
    SamplingParams p;
    p.repetition_penalty = c.repetition;
    p.frequency_penalty = c.frequency;
    p.presence_penalty = c.presence;
    p.temperature = c.temperature;
    p.seed = 17;
    ASSERT_TRUE(p.Validate().ok());
    SamplingParams plain = p;  // the same draw on the reference's logits, without processing
    plain.repetition_penalty = 1;
    plain.frequency_penalty = plain.presence_penalty = 0;
    Sampler s(p), reference(plain);
    ASSERT_TRUE(s.processes_logits());
    EXPECT_EQ(s.CandidatesNeeded(vocab), 0);  // the whole row, even greedy
    const std::vector<int32_t> prompt = {1, 5, 5, 9, 40, 41};
    s.SetPrompt(prompt);
    std::vector<int32_t> output;
    for (int step = 0; step < 60; ++step) {
      // Few distinct logits so penalised tokens keep competing: repeats happen.
      std::vector<float> logits(vocab);
      for (float& v : logits) v = normal(rng);
      for (int id : {5, 9, 40, 41, 100, 101}) logits[id] = 4.0f + 0.01f * id;
      const std::vector<float> want = ReferencePenalties(logits, prompt, output, p);
      const int got = s.Sample(logits.data(), vocab);
      ASSERT_EQ(got, reference.Sample(want.data(), vocab))
          << "case " << compared / 60 << " step " << step;
      s.Accept(got);
      output.push_back(got);
      ++compared;
    }
    // The penalties bit: no case is greedy on the unpenalised maximum all along.
    EXPECT_GT(std::set<int32_t>(output.begin(), output.end()).size(), 1u);
  }
  EXPECT_EQ(compared, 7 * 60);
}

TEST(SamplerTest, BansHoldUntilEnoughTokens) {
  const std::vector<float> logits = {0.0f, 3.0f, 2.5f, 1.0f};
  Sampler s({});
  EXPECT_FALSE(s.processes_logits());
  const std::vector<int32_t> banned = {1};
  s.Ban(banned, 2);
  EXPECT_TRUE(s.processes_logits());
  EXPECT_EQ(s.CandidatesNeeded(4), 0);
  EXPECT_EQ(s.Sample(logits.data(), 4), 2);
  s.Accept(2);
  EXPECT_EQ(s.Sample(logits.data(), 4), 2);
  s.Accept(2);
  EXPECT_FALSE(s.processes_logits());  // two tokens: the ban is over
  EXPECT_EQ(s.CandidatesNeeded(4), 1);
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
  // A banned +inf logit is not chosen; a NaN elsewhere is still never chosen.
  Sampler t({});
  t.Ban(banned, 1);
  const std::vector<float> odd = {std::numeric_limits<float>::quiet_NaN(),
                                  std::numeric_limits<float>::infinity(), -1.0f, 0.5f};
  EXPECT_EQ(t.Sample(odd.data(), 4), 3);
}

TEST(SamplerTest, ValidatesPenalties) {
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    SamplingParams p;
    p.repetition_penalty = bad;
    EXPECT_FALSE(p.Validate().ok()) << bad;
  }
  for (float bad : {-2.01f, 2.01f, std::numeric_limits<float>::quiet_NaN()}) {
    SamplingParams p;
    p.frequency_penalty = bad;
    EXPECT_FALSE(p.Validate().ok()) << bad;
    p = {};
    p.presence_penalty = bad;
    EXPECT_FALSE(p.Validate().ok()) << bad;
  }
  SamplingParams p;
  p.frequency_penalty = p.presence_penalty = -2.0f;
  p.repetition_penalty = 0.01f;
  EXPECT_TRUE(p.Validate().ok());
}

}  // namespace
}  // namespace moe
