// Continuous batching in process (no gRPC, no MPI): requests that join and leave while others
// run get the tokens they get alone; cancellation frees the KV cache; the queue and the KV budget
// are enforced; stop strings cut the text.
#include "coordinator/inference/scheduler.h"

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <thread>
#include <tuple>

#include "coordinator/inference/generation.h"
#include "coordinator/inference/text_stream.h"
#include "coordinator/tools/local_engine.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"

namespace moe {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels::SetCpuThreads(2);
    auto e = LocalEngine::Create(std::string(MOE_SOURCE_DIR) + "/tests/golden/e8_top2_bf16");
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
    ASSERT_TRUE(t.ok());
    tokenizer_ = std::move(*t);
  }

  Request MakeRequest(int i) {
    Request r;
    r.prompt = {1};
    for (int k = 0; k < 5 + 7 * i; ++k) r.prompt.push_back(3 + (i * 131 + k * 17) % 990);
    r.max_tokens = 6 + 3 * i;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = 20;
      r.sampling.seed = 100 + i;
    }
    return r;
  }

  std::vector<int32_t> Alone(const Request& r) {
    auto out = Generate(engine_->runner(), tokenizer_.get(), r);
    EXPECT_TRUE(out.ok());
    return out.ok() ? out->tokens : std::vector<int32_t>{};
  }

  // Drains events until the request finishes; returns its tokens.
  static std::vector<int32_t> Collect(RequestHandle* h, Scheduler* s, FinishReason* reason) {
    std::vector<int32_t> ids;
    for (int guard = 0; guard < 100000; ++guard) {
      if (s->WaitForWork(absl::ZeroDuration())) {
        EXPECT_TRUE(s->Step().ok());
      }
      for (StreamEvent& e : h->Wait(absl::ZeroDuration())) {
        ids.insert(ids.end(), e.token_ids.begin(), e.token_ids.end());
        if (e.finish != FinishReason::kNone) {
          *reason = e.finish;
          return ids;
        }
      }
    }
    ADD_FAILURE() << "request never finished";
    return ids;
  }

  std::unique_ptr<LocalEngine> engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

// What a routing observer sees of the scheduler: each request's start (label, sizes, arrival)
// before its first token, its id as its handle knows it, prompt rows flagged prefill and sampled
// ones not, router logits for every row, and its end.
class RecordingObserver : public RoutingObserver {
 public:
  struct Row {
    uint64_t id;
    int32_t position;
    bool prefill;
  };
  void OnForward(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) override {
    for (const RoutedToken& t : tokens) {
      EXPECT_TRUE(started.count(t.sequence_id)) << "a row before its sequence started";
      rows.push_back({t.sequence_id, t.position, t.prefill});
    }
    for (const Routing& r : routing) {
      EXPECT_EQ(r.logits.size(), tokens.size() * static_cast<size_t>(n_experts));
      for (float x : r.logits) EXPECT_TRUE(std::isfinite(x));
    }
  }
  bool WantsRouterLogits() const override { return true; }
  void OnSequenceStart(uint64_t id, const SequenceInfo& info) override { started[id] = info; }
  void OnSequenceEnd(uint64_t id) override { ended.push_back(id); }

  int n_experts = 0;
  std::map<uint64_t, SequenceInfo> started;
  std::vector<uint64_t> ended;
  std::vector<Row> rows;
};

TEST_F(SchedulerTest, ObserversSeeSequencesLabelsAndPrefillRows) {
  RecordingObserver seen;
  seen.n_experts = engine_->runner()->config().num_local_experts;
  engine_->runner()->AddRoutingObserver(&seen);
  SchedulerOptions o;
  o.max_batch_tokens = 4;  // prompts of 6 and 13 tokens take several chunks
  Scheduler s(engine_->runner(), tokenizer_.get(), o);
  Request a = MakeRequest(0), b = MakeRequest(1);
  a.label = "chat";
  const double before =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  auto ha = s.Submit(a), hb = s.Submit(b);
  ASSERT_TRUE(ha.ok() && hb.ok());
  EXPECT_EQ((*ha)->id(), 1u);
  EXPECT_EQ((*hb)->id(), 2u);
  FinishReason ra, rb;
  const std::vector<int32_t> ta = Collect(ha->get(), &s, &ra), tb = Collect(hb->get(), &s, &rb);
  ASSERT_EQ(seen.started.size(), 2u);
  EXPECT_EQ(seen.started[1].label, "chat");
  EXPECT_EQ(seen.started[2].label, "");
  EXPECT_EQ(seen.started[1].prompt_tokens, static_cast<int32_t>(a.prompt.size()));
  EXPECT_EQ(seen.started[2].max_tokens, b.max_tokens);
  EXPECT_GE(seen.started[1].arrival_seconds, before);
  EXPECT_EQ(seen.ended.size(), 2u);
  // Every prompt position once as prefill; every sampled token fed back (all but the last) once
  // as decode, after the prompt.
  for (const auto& [id, prompt, tokens] : {std::make_tuple(uint64_t{1}, a.prompt.size(), ta),
                                           std::make_tuple(uint64_t{2}, b.prompt.size(), tb)}) {
    std::vector<int32_t> prefill, decode;
    for (const auto& row : seen.rows) {
      if (row.id == id) (row.prefill ? prefill : decode).push_back(row.position);
    }
    ASSERT_EQ(prefill.size(), prompt) << id;
    ASSERT_EQ(decode.size(), tokens.size() - 1) << id;
    for (size_t i = 0; i < prefill.size(); ++i) EXPECT_EQ(prefill[i], static_cast<int32_t>(i));
    for (size_t i = 0; i < decode.size(); ++i)
      EXPECT_EQ(decode[i], static_cast<int32_t>(prompt + i));
  }
}

TEST_F(SchedulerTest, StaggeredRequestsGetWhatTheyGetAlone) {
  SchedulerOptions options;
  options.max_batch_tokens = 16;  // forces chunked prefill beside decodes
  Scheduler s(engine_->runner(), tokenizer_.get(), options);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::vector<std::vector<int32_t>> got(6);
  std::vector<bool> done(6, false);
  for (int step = 0, submitted = 0; std::count(done.begin(), done.end(), true) < 6 && step < 10000;
       ++step) {
    if (submitted < 6 && step % 3 == 0) {  // a new request joins every third step
      auto h = s.Submit(MakeRequest(submitted++));
      ASSERT_TRUE(h.ok());
      handles.push_back(*h);
    }
    if (s.WaitForWork(absl::ZeroDuration())) {
      ASSERT_TRUE(s.Step().ok());
    }
    for (size_t i = 0; i < handles.size(); ++i) {
      for (StreamEvent& e : handles[i]->Wait(absl::ZeroDuration())) {
        got[i].insert(got[i].end(), e.token_ids.begin(), e.token_ids.end());
        if (e.finish != FinishReason::kNone) done[i] = true;
      }
    }
  }
  for (int i = 0; i < 6; ++i) EXPECT_EQ(got[i], Alone(MakeRequest(i))) << "request " << i;
  EXPECT_EQ(s.stats().kv_bytes_used, 0);
  EXPECT_EQ(s.stats().served, 6);
}

TEST_F(SchedulerTest, CancelFreesTheKvCache) {
  Scheduler s(engine_->runner(), tokenizer_.get(), {});
  Request r = MakeRequest(2);
  r.max_tokens = 200;
  auto h = s.Submit(r);
  ASSERT_TRUE(h.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.Step().ok());
  EXPECT_EQ(s.stats().running, 1);
  EXPECT_EQ(s.stats().kv_bytes_used, s.KvBytes(static_cast<int64_t>(r.prompt.size()) + 200));
  (*h)->Cancel();
  ASSERT_TRUE(s.Step().ok());
  EXPECT_EQ(s.stats().running, 0);
  EXPECT_EQ(s.stats().kv_bytes_used, 0);
}

TEST_F(SchedulerTest, QueueAndBudgetLimits) {
  SchedulerOptions options;
  options.max_waiting = 2;
  options.kv_budget_bytes = 0;
  {
    Scheduler s(engine_->runner(), tokenizer_.get(), options);
    EXPECT_EQ(s.Submit(MakeRequest(0)).status().code(),
              absl::StatusCode::kInvalidArgument);  // never fits
  }
  options.kv_budget_bytes = int64_t{1} << 30;
  Scheduler s(engine_->runner(), tokenizer_.get(), options);
  ASSERT_TRUE(s.Submit(MakeRequest(0)).ok());
  ASSERT_TRUE(s.Submit(MakeRequest(1)).ok());
  EXPECT_EQ(s.Submit(MakeRequest(2)).status().code(), absl::StatusCode::kResourceExhausted);
  s.StopAdmitting(absl::UnavailableError("shutting down"));
  EXPECT_EQ(s.Submit(MakeRequest(3)).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, FailAllReachesEveryRequest) {
  SchedulerOptions options;
  options.max_running = 1;
  Scheduler s(engine_->runner(), tokenizer_.get(), options);
  auto running = s.Submit(MakeRequest(0));
  auto waiting = s.Submit(MakeRequest(1));
  ASSERT_TRUE(running.ok() && waiting.ok());
  ASSERT_TRUE(s.Step().ok());
  s.FailAll(absl::UnavailableError("worker lost"));
  for (auto* h : {running->get(), waiting->get()}) {
    bool failed = false;
    for (StreamEvent& e : h->Wait(absl::ZeroDuration())) failed |= absl::IsUnavailable(e.error);
    EXPECT_TRUE(failed);
  }
  EXPECT_EQ(s.stats().waiting, 0);
  EXPECT_EQ(s.stats().running, 0);
}

TEST_F(SchedulerTest, CancelledWaitersLeaveTheQueue) {
  SchedulerOptions options;
  options.max_running = 1;
  options.max_waiting = 1;
  Scheduler s(engine_->runner(), tokenizer_.get(), options);
  Request long_one = MakeRequest(0);
  long_one.max_tokens = 100;
  auto running = s.Submit(long_one);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE(s.Step().ok());  // admitted
  auto waiting = s.Submit(MakeRequest(1));
  ASSERT_TRUE(waiting.ok());
  EXPECT_EQ(s.Submit(MakeRequest(2)).status().code(), absl::StatusCode::kResourceExhausted);
  (*waiting)->Cancel();  // its client gave up: the place is free again at once
  EXPECT_TRUE(s.Submit(MakeRequest(2)).ok());
}

TEST_F(SchedulerTest, KvBudgetDelaysAdmission) {
  SchedulerOptions options;
  Scheduler probe(engine_->runner(), tokenizer_.get(), options);
  const Request a = MakeRequest(0), b = MakeRequest(1);
  // Room for a or b, not both: b waits until a has finished.
  options.kv_budget_bytes = probe.KvBytes(static_cast<int64_t>(
      std::max(a.prompt.size() + a.max_tokens, b.prompt.size() + b.max_tokens)));
  Scheduler s(engine_->runner(), tokenizer_.get(), options);
  auto ha = s.Submit(a), hb = s.Submit(b);
  ASSERT_TRUE(ha.ok() && hb.ok());
  ASSERT_TRUE(s.Step().ok());
  EXPECT_EQ(s.stats().running, 1);
  EXPECT_EQ(s.stats().waiting, 1);
  FinishReason ra, rb;
  EXPECT_EQ(Collect(ha->get(), &s, &ra), Alone(a));
  EXPECT_EQ(Collect(hb->get(), &s, &rb), Alone(b));
  EXPECT_EQ(ra, FinishReason::kLength);
}

TEST_F(SchedulerTest, OneShotGenerationIsTheSchedulersStream) {
  // Generate() drives a Scheduler of its own: the tokens, text and finish a server's scheduler
  // streams for the same request, one event per token, the finish on the last.
  const Request r = MakeRequest(3);
  Scheduler s(engine_->runner(), tokenizer_.get(), {});
  auto h = s.Submit(r);
  ASSERT_TRUE(h.ok());
  std::vector<int32_t> ids;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  while (reason == FinishReason::kNone) {
    ASSERT_TRUE(s.Step().ok());
    for (StreamEvent& e : (*h)->Wait(absl::ZeroDuration())) {
      ids.insert(ids.end(), e.token_ids.begin(), e.token_ids.end());
      text += e.text;
      reason = e.finish;
    }
  }
  std::vector<StreamEvent> seen;
  auto out = Generate(engine_->runner(), tokenizer_.get(), r, /*prefill_chunk=*/4,
                      [&](const StreamEvent& e) { seen.push_back(e); });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->tokens, ids);
  EXPECT_EQ(out->text, text);
  EXPECT_EQ(out->finish, reason);
  ASSERT_EQ(seen.size(), out->tokens.size());
  EXPECT_NE(seen.back().finish, FinishReason::kNone);
  EXPECT_EQ(seen.back().prompt_tokens, static_cast<int>(r.prompt.size()));
  EXPECT_EQ(seen.back().generated_tokens, static_cast<int>(ids.size()));
  EXPECT_GE(out->total_ms, out->time_to_first_token_ms);
}

TEST_F(SchedulerTest, OneShotGenerationEndsAtAStopString) {
  Request r = MakeRequest(0);
  r.max_tokens = 16;
  auto full = Generate(engine_->runner(), tokenizer_.get(), r);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_GE(full->text.size(), 4u) << "'" << full->text << "'";
  const std::string stop = full->text.substr(full->text.size() / 2, 2);
  r.stop = {stop};
  auto cut = Generate(engine_->runner(), tokenizer_.get(), r);
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_EQ(cut->finish, FinishReason::kStop);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_LE(cut->tokens.size(), full->tokens.size());
}

TEST_F(SchedulerTest, OneShotGenerationRefusesAnInvalidRequest) {
  Request r = MakeRequest(0);
  r.max_tokens = 0;
  auto out = Generate(engine_->runner(), tokenizer_.get(), r);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("max_tokens must be >= 1"), std::string::npos)
      << out.status();
}

TEST(TextStreamTest, FirstGeneratedWordKeepsItsSpace) {
  auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
  ASSERT_TRUE(t.ok());
  const std::vector<int> all = (*t)->Encode("The capital of France is Paris, of course", true);
  const std::vector<int32_t> prompt(all.begin(), all.begin() + 6);  // <s> The capital of France is
  TextStream s(t->get(), {}, prompt);
  std::string out;
  for (size_t i = 6; i < all.size(); ++i) out += s.Push(all[i]);
  out += s.Finish();
  EXPECT_EQ(out, " Paris, of course");
}

TEST(TextStreamTest, EarliestOfSeveralStopStrings) {
  auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
  ASSERT_TRUE(t.ok());
  TextStream s(t->get(), {"you", "are you", "never"});
  std::string out;
  for (int id : (*t)->Encode("how are you today", false)) out += s.Push(id);
  out += s.Finish();
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out, "how ");
}

TEST(TextStreamTest, StopStringsMatchOnlyAfterMinTokens) {
  auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
  ASSERT_TRUE(t.ok());
  const std::vector<int> ids = (*t)->Encode("are you? yes, are you?", false);
  const std::vector<int> first = (*t)->Encode("are you?", false);
  ASSERT_EQ(std::vector<int>(ids.begin(), ids.begin() + first.size()), first);
  TextStream s(t->get(), {"are"}, {},
               static_cast<int>(first.size()));  // min_tokens: the first "are you?"
  std::string out;
  for (int id : ids) {
    out += s.Push(id);
    if (s.stopped()) break;
  }
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out + s.Finish(), "are you? yes, ");
}

TEST(TextStreamTest, StopStringsAndCharacters) {
  auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
  ASSERT_TRUE(t.ok());
  const std::vector<int> ids = (*t)->Encode("Hello world, how are you? Fine.", false);
  {
    TextStream s(t->get(), {"are"});
    std::string out;
    for (int id : ids) {
      out += s.Push(id);
      if (s.stopped()) break;
    }
    EXPECT_TRUE(s.stopped());
    EXPECT_EQ(out + s.Finish(), "Hello world, how ");
  }
  {
    TextStream s(t->get(), {"never there", ""});
    std::string out;
    for (int id : ids) out += s.Push(id);
    EXPECT_FALSE(s.stopped());
    EXPECT_EQ(out + s.Finish(), "Hello world, how are you? Fine.");
  }
  {
    // Held-back text never splits a multi-byte character.
    TextStream s(t->get(), {"xyz"});
    for (int id : (*t)->Encode("日本語のテキスト", false)) {
      const std::string piece = s.Push(id);
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
      if (!piece.empty()) {
        EXPECT_NE(static_cast<unsigned char>(piece[0]) & 0xC0, 0x80u);
      }
    }
  }
}

}  // namespace
}  // namespace moe
