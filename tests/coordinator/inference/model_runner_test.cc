// The forward pass's own invariants on a golden checkpoint: chunked prefill and batching several
// sequences in one step give the logits each sequence gets alone (bit for bit for a sequence
// that runs whole, where the products are batch-invariant); bad tokens change nothing.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "coordinator/inference/generation.h"
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

const std::vector<int32_t> kA = {1,  17, 300, 42, 999, 5,  6,  7,   8, 9,
                                 10, 11, 12,  13, 14,  15, 16, 300, 2, 44};
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
  const SequenceChunk s2[] = {{&ca, absl::MakeConstSpan(kA).subspan(12), true},
                              {&cb, next_b, false}};
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
  EXPECT_NE(std::string(s.message()).find("token id 1000 is outside the vocabulary"),
            std::string::npos);
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

// An exchange that overlaps as a cluster's does: Post returns at once and the experts run only in
// Complete, so a Forward that combined a micro-batch before completing it, or posted over one in
// flight, gives wrong logits. It records the order of posts and completions.
class DeferringExchange : public ExpertExchange {
 public:
  explicit DeferringExchange(ExpertExchange* inner) : inner_(inner) {}
  const ExpertPlacement& placement() const override { return inner_->placement(); }
  absl::Status Dispatch(const ExpertLayout& layout, const float* rows, float* out) override {
    return inner_->Dispatch(layout, rows, out);
  }
  absl::Status Post(const ExpertLayout& layout, const float* rows, float* out, int m) override {
    if (in_flight_[m].layout != nullptr) return absl::InternalError("posted over one in flight");
    in_flight_[m] = {&layout, rows, out};
    log_.push_back(absl::StrCat("P", m));
    return absl::OkStatus();
  }
  absl::Status Complete(int m) override {
    const Pending p = in_flight_[m];
    if (p.layout == nullptr) return absl::InternalError("completed without a post");
    in_flight_[m] = {};
    log_.push_back(absl::StrCat("C", m));
    return inner_->Dispatch(*p.layout, p.rows, p.out);
  }
  bool overlaps() const override { return true; }
  std::vector<std::string> log_;

 private:
  struct Pending {
    const ExpertLayout* layout = nullptr;
    const float* rows = nullptr;
    float* out = nullptr;
  };
  ExpertExchange* inner_;
  Pending in_flight_[2];
};

// Two micro-batches in ping-pong give the logits one batch gives, bit for bit where the products
// are batch-invariant, in the order A, B, A, B of posts and completions.
TEST_F(ModelRunnerTest, MicroBatchesEqualOneBatch) {
  const std::vector<int32_t> kC = {1, 9, 99, 999, 8, 88, 888, 7};
  DeferringExchange deferring(engine_->exchange());
  auto split = ModelRunner::Create(&engine_->weights(), &deferring, engine_->runner()->backend());
  ASSERT_TRUE(split.ok()) << split.status();
  (*split)->set_overlap(OverlapPolicy{OverlapPolicy::Mode::kOn, 2});
  ModelRunner* whole = engine_->runner();
  whole->set_overlap(OverlapPolicy{OverlapPolicy::Mode::kOff, 2});
  KvCache w[3] = {whole->NewCache(), whole->NewCache(), whole->NewCache()};
  KvCache s[3] = {(*split)->NewCache(), (*split)->NewCache(), (*split)->NewCache()};
  // A prefill step of three sequences, then a decode step (one token each) after it.
  for (int step = 0; step < 2; ++step) {
    const int32_t next[3] = {77, 78, 79};
    auto chunks = [&](KvCache* c) {
      return step == 0 ? std::vector<SequenceChunk>{{&c[0], kA, true},
                                                    {&c[1], kB, true},
                                                    {&c[2], kC, true}}
                       : std::vector<SequenceChunk>{{&c[0], {&next[0], 1}, true},
                                                    {&c[1], {&next[1], 1}, true},
                                                    {&c[2], {&next[2], 1}, true}};
    };
    std::vector<float> want, got;
    ASSERT_TRUE(whole->Forward(chunks(w), &want).ok());
    deferring.log_.clear();
    ASSERT_TRUE((*split)->Forward(chunks(s), &got).ok());
    EXPECT_EQ((*split)->last_micro_batches(), 2);
    EXPECT_EQ(whole->last_micro_batches(), 1);
    if (kernels::packed::Available()) {
      EXPECT_EQ(got, want) << "step " << step;
    } else {
      EXPECT_LT(RelErr(got, want), 1e-5) << "step " << step;
    }
    const int layers = whole->config().num_hidden_layers;
    std::vector<std::string> order = {"P0"};
    for (int l = 0; l < layers; ++l) {
      for (const char* e : {"P1", "C0"}) order.push_back(e);
      if (l + 1 < layers) order.push_back("P0");
      order.push_back("C1");
    }
    EXPECT_EQ(deferring.log_, order) << "step " << step;
    // The observers' routing is the whole step's, in batch order, for every layer.
    for (int l = 0; l < layers; ++l) {
      EXPECT_EQ((*split)->last_routing()[l].expert, whole->last_routing()[l].expert)
          << "layer " << l;
      EXPECT_EQ((*split)->last_routing()[l].weight, whole->last_routing()[l].weight)
          << "layer " << l;
    }
  }
  // Policies: auto below its threshold, and one chunk, run whole.
  (*split)->set_overlap(OverlapPolicy{OverlapPolicy::Mode::kAuto, 1000});
  KvCache a = (*split)->NewCache(), b = (*split)->NewCache();
  const SequenceChunk two[] = {{&a, kA, false}, {&b, kB, false}};
  std::vector<float> logits;
  ASSERT_TRUE((*split)->Forward(two, &logits).ok());
  EXPECT_EQ((*split)->last_micro_batches(), 1);
  (*split)->set_overlap(OverlapPolicy{OverlapPolicy::Mode::kOn, 2});
  KvCache lone = (*split)->NewCache();
  const SequenceChunk one{&lone, kC, false};
  ASSERT_TRUE((*split)->Forward({&one, 1}, &logits).ok());
  EXPECT_EQ((*split)->last_micro_batches(), 1);
}

}  // namespace
}  // namespace moe
