// The forward pass's own invariants on a golden checkpoint: chunked prefill and batching several
// sequences in one step give the logits each sequence gets alone (bit for bit for a sequence
// that runs whole, where the products are batch-invariant); bad tokens change nothing.
#include <cmath>
#include <string>

#include "coordinator/generation.h"
#include "coordinator/tools/local_engine.h"
#include "gtest/gtest.h"
#include "kernels/cpu/packed_matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace moe {
namespace {

double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    den += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(num / den);
}

class ModelRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels::SetCpuThreads(2);
    auto e = LocalEngine::Create(std::string(MOE_SOURCE_DIR) + "/tests/golden/swa_gqa4");
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  std::vector<float> Alone(const std::vector<int32_t>& tokens) {
    KvCache cache = engine_->runner()->NewCache();
    std::vector<float> logits;
    const SequenceChunk c{&cache, tokens, true};
    EXPECT_TRUE(engine_->runner()->Forward({&c, 1}, &logits).ok());
    return logits;
  }
  std::unique_ptr<LocalEngine> engine_;
};

const std::vector<int32_t> kA = {1, 17, 300, 42, 999, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 300, 2, 44};
const std::vector<int32_t> kB = {1, 500, 501, 502, 3};

TEST_F(ModelRunnerTest, ChunkedPrefillEqualsOnePrefill) {
  const std::vector<float> want = Alone(kA);
  ModelRunner* r = engine_->runner();
  KvCache cache = r->NewCache();
  std::vector<float> got, logits;
  for (size_t begin = 0; begin < kA.size();) {
    const size_t len = std::min<size_t>(begin == 0 ? 7 : 5, kA.size() - begin);
    const SequenceChunk c{&cache, absl::MakeConstSpan(kA).subspan(begin, len), true};
    ASSERT_TRUE(r->Forward({&c, 1}, &logits).ok());
    got.insert(got.end(), logits.begin(), logits.end());
    begin += len;
  }
  EXPECT_LT(RelErr(got, want), 1e-5);
}

TEST_F(ModelRunnerTest, BatchedSequencesEqualAlone) {
  const std::vector<float> a = Alone(kA), b = Alone(kB);
  ModelRunner* r = engine_->runner();
  KvCache ca = r->NewCache(), cb = r->NewCache();
  // Step 1: a's first 12 tokens and all of b, in one batch.
  std::vector<float> step1, step2;
  const SequenceChunk s1[] = {{&ca, absl::MakeConstSpan(kA).subspan(0, 12), true}, {&cb, kB, true}};
  ASSERT_TRUE(r->Forward(s1, &step1).ok());
  // Step 2: the rest of a, and one more token for b (its own continuation is not compared).
  const int32_t next_b[] = {77};
  const SequenceChunk s2[] = {{&ca, absl::MakeConstSpan(kA).subspan(12), true}, {&cb, next_b, false}};
  ASSERT_TRUE(r->Forward(s2, &step2).ok());
  const int64_t vocab = r->config().vocab_size;
  std::vector<float> got_a(step1.begin(), step1.begin() + 12 * vocab);
  got_a.insert(got_a.end(), step2.begin(), step2.begin() + (kA.size() - 12) * vocab);
  const std::vector<float> got_b(step1.begin() + 12 * vocab, step1.end());
  EXPECT_LT(RelErr(got_a, a), 1e-5);
  EXPECT_LT(RelErr(got_b, b), 1e-5);
  // b ran whole in both, so with batch-invariant products (the packed kernels) its logits are
  // the same bits whatever shared its step; a's prompt was split, which changes its attention's
  // blocking, hence the tolerance above.
  if (kernels::packed::Available()) {
    EXPECT_EQ(got_b, b) << "a sequence's logits changed with the rows that shared its step";
  }
  EXPECT_EQ(ca.length(), static_cast<int64_t>(kA.size()));
  EXPECT_EQ(cb.length(), static_cast<int64_t>(kB.size() + 1));
}

TEST_F(ModelRunnerTest, BadTokensAndLongSequencesFailWithoutSideEffects) {
  ModelRunner* r = engine_->runner();
  KvCache cache = r->NewCache();
  std::vector<float> logits;
  const int32_t bad[] = {1, 1000};
  const SequenceChunk c{&cache, bad, false};
  const absl::Status s = r->Forward({&c, 1}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("token id 1000 is outside the vocabulary"), std::string::npos);
  const int32_t negative[] = {-3};
  const SequenceChunk n{&cache, negative, false};
  EXPECT_FALSE(r->Forward({&n, 1}, &logits).ok());
  EXPECT_EQ(cache.length(), 0);

  std::vector<int32_t> too_long(static_cast<size_t>(r->config().max_position_embeddings) + 1, 5);
  const SequenceChunk l{&cache, too_long, false};
  const absl::Status sl = r->Forward({&l, 1}, &logits);
  EXPECT_NE(std::string(sl.message()).find("exceeds max_position_embeddings"), std::string::npos);
  EXPECT_EQ(cache.length(), 0);
}

TEST_F(ModelRunnerTest, ChunkedPrefillGeneratesTheSameTokens) {
  auto tokenizer = Tokenizer::Load(MOE_TOKENIZER_PATH);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  Request r;
  r.prompt = kA;
  r.max_tokens = 12;
  auto whole = Generate(engine_->runner(), tokenizer->get(), r, /*prefill_chunk=*/1000);
  auto chunked = Generate(engine_->runner(), tokenizer->get(), r, /*prefill_chunk=*/3);
  ASSERT_TRUE(whole.ok() && chunked.ok());
  EXPECT_EQ(whole->tokens, chunked->tokens);
}

}  // namespace
}  // namespace moe
