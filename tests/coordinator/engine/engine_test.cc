// The engine's loop and the cluster's health in process (no gRPC, no MPI): RunUntil steps what the
// listeners submit and returns at the stop; Drain finishes admitted requests, refuses new ones and
// fails what the grace period leaves; a lost worker stops admission, naming it, until it reports
// again, and one known dead fails the drain.
#include "coordinator/engine/engine.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "coordinator/engine/cluster_health.h"
#include "coordinator/inference/generation.h"
#include "coordinator/tools/local_engine.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"

namespace moe {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernels::SetCpuThreads(2);
    auto e = LocalEngine::Create(std::string(MOE_SOURCE_DIR) + "/tests/golden/e8_top2_bf16");
    ASSERT_TRUE(e.ok()) << e.status();
    local_ = std::move(*e);
    auto t = Tokenizer::Load(MOE_TOKENIZER_PATH);
    ASSERT_TRUE(t.ok());
    tokenizer_ = std::move(*t);
  }

  static Request MakeRequest(int i, int max_tokens) {
    Request r;
    r.prompt = {1};
    for (int k = 0; k < 6 + 5 * i; ++k) r.prompt.push_back(3 + (i * 97 + k * 31) % 990);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;  // every request runs to max_tokens
    return r;
  }

  std::vector<int32_t> Alone(const Request& r) {
    auto out = Generate(local_->runner(), tokenizer_.get(), r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->tokens : std::vector<int32_t>{};
  }

  // Everything a handle says until it ends (the engine steps on another thread, or already did).
  struct Outcome {
    std::vector<int32_t> tokens;
    FinishReason finish = FinishReason::kNone;
    absl::Status error;
  };
  static Outcome Await(RequestHandle* h) {
    Outcome out;
    for (int guard = 0; guard < 3000; ++guard) {
      for (StreamEvent& e : h->Wait(absl::Milliseconds(10))) {
        out.tokens.insert(out.tokens.end(), e.token_ids.begin(), e.token_ids.end());
        if (!e.error.ok() || e.finish != FinishReason::kNone) {
          out.finish = e.finish;
          out.error = e.error;
          return out;
        }
      }
    }
    ADD_FAILURE() << "request never ended";
    return out;
  }

  std::unique_ptr<LocalEngine> local_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(EngineTest, RunUntilServesWhatIsSubmittedAndReturnsAtTheStop) {
  // The references first: the runner is the engine thread's alone once the loop runs.
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < 3; ++i) alone.push_back(Alone(MakeRequest(i, 5 + i)));
  Engine engine(local_->runner(), tokenizer_.get(), SchedulerOptions{}, /*rebalancer=*/nullptr);
  std::atomic<bool> stop{false};
  absl::Status ran = absl::UnknownError("RunUntil did not return");
  std::thread loop([&] { ran = engine.RunUntil(stop); });
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 3; ++i) {
    auto h = engine.scheduler()->Submit(MakeRequest(i, 5 + i));
    ASSERT_TRUE(h.ok()) << h.status();
    handles.push_back(*h);
  }
  for (int i = 0; i < 3; ++i) {
    const Outcome got = Await(handles[i].get());
    EXPECT_TRUE(got.error.ok()) << got.error;
    EXPECT_EQ(got.finish, FinishReason::kLength);
    EXPECT_EQ(got.tokens, alone[i]) << "request " << i;
  }
  stop = true;
  loop.join();
  EXPECT_TRUE(ran.ok()) << ran;
  EXPECT_EQ(engine.stats().served, 3);
  EXPECT_GT(engine.stats().steps, 0);
}

TEST_F(EngineTest, DrainFinishesAdmittedRequestsAndRefusesNewOnes) {
  Engine engine(local_->runner(), tokenizer_.get(), SchedulerOptions{}, nullptr);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 2; ++i) handles.push_back(*engine.scheduler()->Submit(MakeRequest(i, 8)));
  ASSERT_TRUE(engine.Drain(absl::Seconds(60)).ok());
  for (int i = 0; i < 2; ++i) {
    const Outcome got = Await(handles[i].get());
    EXPECT_TRUE(got.error.ok()) << got.error;
    EXPECT_EQ(got.tokens, Alone(MakeRequest(i, 8))) << "request " << i;
  }
  auto late = engine.scheduler()->Submit(MakeRequest(0, 4));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(late.status().message().find("shutting down"), std::string::npos) << late.status();
}

TEST_F(EngineTest, DrainFailsWhatTheGracePeriodLeaves) {
  Engine engine(local_->runner(), tokenizer_.get(), SchedulerOptions{}, nullptr);
  auto h = engine.scheduler()->Submit(MakeRequest(1, 200));
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(engine.Drain(absl::ZeroDuration()).ok());
  const Outcome got = Await(h->get());
  EXPECT_EQ(got.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(got.error.message().find("shut down before the request finished"), std::string::npos)
      << got.error;
  EXPECT_EQ(engine.stats().running + engine.stats().waiting, 0);
}

// Heartbeats as a test sets them: which ranks are silent, and which of those are known gone.
class FakeHeartbeats : public WorkerHeartbeats {
 public:
  void Set(std::vector<int> lost, std::map<int, std::string> gone = {}) {
    absl::MutexLock lock(&mu_);
    lost_ = std::move(lost);
    gone_ = std::move(gone);
  }
  std::vector<int> LostWorkers() const override {
    absl::MutexLock lock(&mu_);
    return lost_;
  }
  absl::Status CheckAlive(int rank) const override {
    absl::MutexLock lock(&mu_);
    auto it = gone_.find(rank);
    return it == gone_.end() ? absl::OkStatus() : absl::UnavailableError(it->second);
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int> lost_;
  std::map<int, std::string> gone_;
};

// Polls `done` for up to 5 s: the watcher looks every 50 ms.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 500; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

TEST_F(EngineTest, ALostWorkerStopsAdmissionUntilItReportsAgain) {
  Engine engine(local_->runner(), tokenizer_.get(), SchedulerOptions{}, nullptr);
  FakeHeartbeats heartbeats;
  ClusterHealth health(&heartbeats, engine.scheduler());
  absl::Mutex mu;
  std::vector<bool> serving;  // every change the gRPC health service would see
  health.OnServingChange([&](bool s) {
    absl::MutexLock lock(&mu);
    serving.push_back(s);
  });
  health.StartWatching();
  EXPECT_TRUE(health.status().ok());

  heartbeats.Set({2});
  ASSERT_TRUE(Eventually([&] { return !health.status().ok(); }));
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(health.status().message().find("worker rank 2 is not answering"), std::string::npos)
      << health.status();
  auto refused = engine.scheduler()->Submit(MakeRequest(0, 4));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("worker rank 2"), std::string::npos)
      << refused.status();

  heartbeats.Set({});
  ASSERT_TRUE(Eventually([&] { return health.status().ok(); }));
  EXPECT_TRUE(engine.scheduler()->Submit(MakeRequest(0, 4)).ok());
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(serving, (std::vector<bool>{false, true}));
  }

  // Once serving has ended, a worker that comes back does not reopen admission.
  heartbeats.Set({1});
  ASSERT_TRUE(Eventually([&] { return !health.status().ok(); }));
  health.SetDown(absl::UnavailableError("the server is shutting down"));
  heartbeats.Set({});
  health.StopWatching();
  EXPECT_TRUE(health.CheckKnownDead().ok());
  EXPECT_EQ(health.status().message(), "the server is shutting down");
  EXPECT_FALSE(engine.scheduler()->Submit(MakeRequest(0, 4)).ok());
  ASSERT_TRUE(engine.Drain(absl::Seconds(60)).ok());
}

TEST_F(EngineTest, AWorkerKnownDeadIsNamedAndASilentOneIsNot) {
  Engine engine(local_->runner(), tokenizer_.get(), SchedulerOptions{}, nullptr);
  FakeHeartbeats heartbeats;
  ClusterHealth health(&heartbeats, engine.scheduler());
  heartbeats.Set({3});  // silent, perhaps busy: the drain may still finish
  EXPECT_TRUE(health.CheckKnownDead().ok());
  heartbeats.Set({1, 3}, {{1, "worker rank 1's report stream ended"}});
  const absl::Status dead = health.CheckKnownDead();
  EXPECT_EQ(dead.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(dead.message(),
            "the cluster failed: worker rank 1's report stream ended; worker rank 3 is not "
            "answering (its "
            "heartbeat is lost)");
}

TEST(ClusterHealthTest, WithoutHeartbeatsTheClusterIsHealthyUntilDown) {
  ClusterHealth health(nullptr, nullptr);
  health.StartWatching();
  EXPECT_TRUE(health.status().ok());
  EXPECT_TRUE(health.CheckKnownDead().ok());
  health.SetDown(absl::UnavailableError("the cluster failed: x"));
  EXPECT_EQ(health.status().message(), "the cluster failed: x");
}

}  // namespace
}  // namespace moe
