// The cluster protocol in one process: the coordinator's ClusterExchange against three workers'
// serving loops (worker/expert_server.h) on threads, over in-process ranks
// (core/exchange/in_process_messenger.h) and the host data plane. Every dispatch is checked
// against the in-process exchange on the same layout; then the ways it must fail: a stalled
// worker, a dead one, a mismatched header or reply; and live re-placement, committed and aborted.
#include "core/exchange/cluster_exchange.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/exchange/cluster_protocol.h"
#include "core/exchange/data_plane.h"
#include "core/exchange/expert_exchange.h"
#include "core/exchange/in_process_messenger.h"
#include "core/placement/placement_registry.h"
#include "gtest/gtest.h"
#include "worker/expert_server.h"

namespace moe {
namespace {

constexpr int kWorkers = 3;
constexpr int kLayers = 2;
constexpr int kExperts = 8;
constexpr int64_t kHidden = 5;

// Replicas on several workers, and a different table per layer.
ExpertPlacement ReplicatedPlacement() {
  absl::StatusOr<ExpertPlacement> p = ExpertPlacement::FromJson(
      R"({"layers": [[1, [1, 2], 2, 3, [3, 1], 2, 1, 3], [3, 2, 1, [1, 2, 3], 3, 2, 1, 1]]})",
      kLayers, kExperts, kWorkers);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// An expert as a function anyone can check: row * (expert + 1) + layer / 4, per element. A
// worker's runner refuses slots its rank does not host (rank 0: every slot, the reference).
class ScaleRunner : public ExpertRunner {
 public:
  ScaleRunner(int rank, const ExpertPlacement* placement) : rank_(rank), placement_(placement) {}
  absl::Status RunExperts(const ExpertLayout& layout, const float* rows, float* out) override {
    absl::MutexLock lock(&mu_);
    const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
    for (int s = 0; s < layout.n_slots(); ++s) {
      if (layout.rows_of(s) == 0) continue;
      if (rank_ != 0 && slots[s].rank != rank_) {
        return absl::FailedPreconditionError(absl::StrCat("slot ", s, " is not on rank ", rank_));
      }
      const float scale = static_cast<float>(slots[s].expert + 1);
      for (int64_t i = layout.slot_offsets[s] * layout.hidden;
           i < layout.slot_offsets[s + 1] * layout.hidden; ++i) {
        out[i] = rows[i] * scale + 0.25f * static_cast<float>(layout.layer);
      }
    }
    ++steps_;
    return absl::OkStatus();
  }
  // A committed re-placement changes which slots this rank runs.
  void set_placement(const ExpertPlacement* placement) {
    absl::MutexLock lock(&mu_);
    placement_ = placement;
  }
  int steps() {
    absl::MutexLock lock(&mu_);
    return steps_;
  }

 private:
  absl::Mutex mu_;
  const int rank_;
  const ExpertPlacement* placement_ ABSL_GUARDED_BY(mu_);
  int steps_ ABSL_GUARDED_BY(mu_) = 0;
};

// Loads at once: Begin takes the plan, Progress says ready, Commit hands it over.
class InstantSwitcher : public PlacementSwitcher {
 public:
  explicit InstantSwitcher(ScaleRunner* runner) : runner_(runner) {}
  absl::Status Begin(ExpertPlacement next, uint32_t epoch) override {
    next_ = std::make_unique<ExpertPlacement>(std::move(next));
    epoch_ = epoch;
    return absl::OkStatus();
  }
  PlacementReply Progress() override {
    PlacementReply reply;
    reply.magic = kPlacementMagic;
    reply.state =
        static_cast<int32_t>(next_ != nullptr ? PlacementState::kReady : PlacementState::kIdle);
    reply.placement_epoch = epoch_;
    return reply;
  }
  absl::StatusOr<const ExpertPlacement*> Commit() override {
    ++commits;
    current_ = std::move(next_);
    runner_->set_placement(current_.get());
    return current_.get();
  }
  void Abort() override {
    next_.reset();
    ++aborts;
  }
  int aborts = 0;
  std::atomic<int> commits{0};

 private:
  ScaleRunner* runner_;
  std::unique_ptr<ExpertPlacement> next_, current_;
  uint32_t epoch_ = 0;
};

// A random layout of `layer`: each slot gets 0, 1 or 17 rows; rows are random.
ExpertLayout RandomLayout(const ExpertPlacement& placement, int layer, std::mt19937* rng,
                          std::vector<float>* rows) {
  ExpertLayout layout;
  layout.layer = layer;
  layout.hidden = kHidden;
  layout.slot_offsets.assign(1, 0);
  const int64_t sizes[] = {0, 1, 17};
  for (int s = 0; s < placement.n_slots(layer); ++s) {
    layout.slot_offsets.push_back(layout.slot_offsets.back() + sizes[(*rng)() % 3]);
  }
  std::uniform_real_distribution<float> value(-2.f, 2.f);
  rows->resize(static_cast<size_t>(layout.n_rows() * kHidden));
  for (float& x : *rows) x = value(*rng);
  return layout;
}

// The coordinator (rank 0) and kWorkers serving loops on threads. A worker listed in `silent`
// never starts serving (stalled before its first step).
class Cluster {
 public:
  explicit Cluster(ExpertPlacement placement, std::vector<int> silent = {}, bool switchers = true)
      : placement_(std::move(placement)),
        registry_(PlacementRegistry::Borrowing(&placement_)),
        network_(kWorkers + 1) {
    coordinator_plane_ = NewHostDataPlane(network_.rank(0));
    ClusterExchangeOptions options;
    options.worker_timeout_seconds = 2.0;
    options.liveness = network_.liveness();
    exchange_ = std::make_unique<ClusterExchange>(registry_.get(), network_.rank(0),
                                                  coordinator_plane_.get(), nullptr, options);
    for (int r = 1; r <= kWorkers; ++r) {
      Worker& w = workers_[r];
      w.runner = std::make_unique<ScaleRunner>(r, &placement_);
      w.switcher = std::make_unique<InstantSwitcher>(w.runner.get());
      w.plane = NewHostDataPlane(network_.rank(r));
      if (std::find(silent.begin(), silent.end(), r) != silent.end()) continue;
      w.options.placement = &placement_;
      w.options.n_layers = kLayers;
      w.options.hidden = kHidden;
      w.options.messenger = network_.rank(r);
      w.options.data = w.plane.get();
      w.options.switcher = switchers ? w.switcher.get() : nullptr;
      w.thread = std::thread([&w] { w.result = ServeExperts(w.runner.get(), w.options); });
    }
  }
  // Shuts the workers down (those still serving) and joins them.
  ~Cluster() {
    if (!shut_down_) (void)exchange_->Shutdown(1.0);
    for (Worker& w : workers_) {
      if (w.thread.joinable()) w.thread.join();
    }
  }
  absl::Status Shutdown() {
    shut_down_ = true;
    return exchange_->Shutdown(1.0);
  }
  ClusterExchange& exchange() { return *exchange_; }
  InProcessNetwork& network() { return network_; }
  PlacementRegistry& registry() { return *registry_; }
  const ExpertPlacement& placement() const { return placement_; }
  // After Shutdown: what worker r's loop returned.
  absl::Status worker_result(int r) {
    if (workers_[r].thread.joinable()) workers_[r].thread.join();
    return workers_[r].result;
  }
  ScaleRunner& runner(int r) { return *workers_[r].runner; }
  InstantSwitcher& switcher(int r) { return *workers_[r].switcher; }

 private:
  struct Worker {
    std::unique_ptr<ScaleRunner> runner;
    std::unique_ptr<InstantSwitcher> switcher;
    std::unique_ptr<DataPlane> plane;
    ExpertServeOptions options;
    std::thread thread;
    absl::Status result = absl::UnknownError("not started");
  };
  ExpertPlacement placement_;
  std::unique_ptr<PlacementRegistry> registry_;
  InProcessNetwork network_;
  std::unique_ptr<DataPlane> coordinator_plane_;
  std::unique_ptr<ClusterExchange> exchange_;
  Worker workers_[kWorkers + 1];
  bool shut_down_ = false;
};

// Records each commit it is told of, and whether any worker had switched by then.
class CommitWatcher : public PlacementRegistry::Subscriber {
 public:
  explicit CommitWatcher(Cluster* cluster) : cluster_(cluster) {}
  void OnPlacementCommitted(const std::shared_ptr<const ExpertPlacement>& placement,
                            uint32_t epoch) override {
    epochs.push_back(epoch);
    slots_in_force = placement->n_slots(0);
    for (int r = 1; r <= kWorkers; ++r) workers_switched_before += cluster_->switcher(r).commits;
  }
  std::vector<uint32_t> epochs;
  int slots_in_force = 0;
  int workers_switched_before = 0;

 private:
  Cluster* cluster_;
};

// What the in-process exchange gives for the same layout: the reference.
std::vector<float> Reference(const ExpertPlacement& placement, const ExpertLayout& layout,
                             const std::vector<float>& rows) {
  ScaleRunner all(0, &placement);
  InProcessExchange local(&all, &placement);
  std::vector<float> out(rows.size(), NAN);
  EXPECT_TRUE(local.Dispatch(layout, rows.data(), out.data()).ok());
  return out;
}

TEST(ClusterExchangeTest, RandomLayoutsMatchTheInProcessExchange) {
  Cluster cluster(ReplicatedPlacement());
  std::mt19937 rng(7);
  for (int step = 0; step < 24; ++step) {
    std::vector<float> rows;
    const ExpertLayout layout = RandomLayout(cluster.placement(), step % kLayers, &rng, &rows);
    std::vector<float> out(rows.size(), NAN);
    ASSERT_TRUE(cluster.exchange().Dispatch(layout, rows.data(), out.data()).ok())
        << "step " << step;
    EXPECT_EQ(out, Reference(cluster.placement(), layout, rows)) << "step " << step;
  }
  ExchangeStats& stats = cluster.exchange().stats();
  EXPECT_EQ(stats.exchanges, 24);
  ASSERT_TRUE(cluster.Shutdown().ok());
  for (int r = 1; r <= kWorkers; ++r) EXPECT_TRUE(cluster.worker_result(r).ok()) << r;
  // Every worker hosts slots of both layers, so each ran some step's experts.
  for (int r = 1; r <= kWorkers; ++r) EXPECT_GT(cluster.runner(r).steps(), 0) << r;
}

TEST(ClusterExchangeTest, EmptyDispatchReachesEveryWorker) {
  Cluster cluster(ReplicatedPlacement());
  ExpertLayout layout;
  layout.layer = 1;
  layout.hidden = kHidden;
  layout.slot_offsets.assign(static_cast<size_t>(cluster.placement().n_slots(1)) + 1, 0);
  EXPECT_TRUE(cluster.exchange().Dispatch(layout, nullptr, nullptr).ok());
  EXPECT_TRUE(cluster.Shutdown().ok());
}

TEST(ClusterExchangeTest, TwoMicroBatchesInFlight) {
  Cluster cluster(ReplicatedPlacement());
  ASSERT_TRUE(cluster.exchange().overlaps());  // the host plane keeps two groups in flight
  std::mt19937 rng(11);
  for (int round = 0; round < 6; ++round) {
    std::vector<float> rows_a, rows_b;
    const ExpertLayout a = RandomLayout(cluster.placement(), 0, &rng, &rows_a);
    const ExpertLayout b = RandomLayout(cluster.placement(), 1, &rng, &rows_b);
    std::vector<float> out_a(rows_a.size(), NAN), out_b(rows_b.size(), NAN);
    ASSERT_TRUE(cluster.exchange().Post(a, rows_a.data(), out_a.data(), 0).ok());
    ASSERT_TRUE(cluster.exchange().Post(b, rows_b.data(), out_b.data(), 1).ok());
    EXPECT_FALSE(cluster.exchange().Post(b, rows_b.data(), out_b.data(), 1).ok());  // posted twice
    ASSERT_TRUE(cluster.exchange().Complete(0).ok());
    ASSERT_TRUE(cluster.exchange().Complete(1).ok());
    EXPECT_EQ(out_a, Reference(cluster.placement(), a, rows_a)) << "round " << round;
    EXPECT_EQ(out_b, Reference(cluster.placement(), b, rows_b)) << "round " << round;
  }
  EXPECT_TRUE(cluster.Shutdown().ok());
}

TEST(ClusterExchangeTest, StalledWorkerFailsTheStepAtTheDeadlineNamingIt) {
  Cluster cluster(ReplicatedPlacement(), /*silent=*/{2});
  std::mt19937 rng(3);
  std::vector<float> rows;
  ExpertLayout layout = RandomLayout(cluster.placement(), 0, &rng, &rows);
  layout.slot_offsets.assign(layout.slot_offsets.size(), 0);  // one row per slot: every worker
  for (size_t s = 1; s < layout.slot_offsets.size(); ++s)
    layout.slot_offsets[s] = static_cast<int64_t>(s);
  rows.assign(static_cast<size_t>(layout.n_rows() * kHidden), 1.f);
  std::vector<float> out(rows.size());
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = cluster.exchange().Dispatch(layout, rows.data(), out.data());
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find("rank 2 did not answer within 2 s"), std::string::npos) << status;
  EXPECT_GE(waited, 1.9);
  EXPECT_LT(waited, 10.0);
  // The shutdown cannot reach it either, and says so; the others leave.
  const absl::Status left = cluster.Shutdown();
  EXPECT_TRUE(absl::IsUnavailable(left)) << left;
  EXPECT_NE(left.message().find("rank 2"), std::string::npos) << left;
}

TEST(ClusterExchangeTest, DeadWorkerFailsTheStepAtOnce) {
  Cluster cluster(ReplicatedPlacement(), /*silent=*/{3});
  cluster.network().MarkDead(3);
  std::vector<float> rows(static_cast<size_t>(cluster.placement().n_slots(1) * kHidden), 1.f);
  ExpertLayout layout;
  layout.layer = 1;
  layout.hidden = kHidden;
  for (int s = 0; s <= cluster.placement().n_slots(1); ++s) layout.slot_offsets.push_back(s);
  std::vector<float> out(rows.size());
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = cluster.exchange().Dispatch(layout, rows.data(), out.data());
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_NE(status.message().find("rank 3 is gone"), std::string::npos) << status;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.5);
}

TEST(ClusterExchangeTest, WorkerRefusesAMismatchedHeader) {
  // Rank 0 here is the test itself, speaking the protocol by hand to one worker loop.
  const ExpertPlacement placement = ReplicatedPlacement();
  InProcessNetwork network(kWorkers + 1);
  ScaleRunner runner(1, &placement);
  std::unique_ptr<DataPlane> plane = NewHostDataPlane(network.rank(1));
  ExpertServeOptions options;
  options.placement = &placement;
  options.n_layers = kLayers;
  options.hidden = kHidden;
  options.messenger = network.rank(1);
  options.data = plane.get();
  absl::Status result;
  std::thread worker([&] { result = ServeExperts(&runner, options); });
  StepHeader h{kStepMagic,
               static_cast<int32_t>(StepCommand::kForward),
               1,
               /*layer=*/0,
               placement.n_slots(0),
               0,
               /*hidden=*/kHidden + 1,
               0,
               1000,
               0,
               0};
  network.rank(0)->Send(&h, sizeof(h), Element::kByte, 1, protocol::kHeaderTag);
  worker.join();
  EXPECT_TRUE(absl::IsInternal(result)) << result;
  EXPECT_NE(result.message().find("worker rank 1"), std::string::npos) << result;

  // A header that is not one (its magic wrong) is refused the same way.
  ScaleRunner runner2(2, &placement);
  std::unique_ptr<DataPlane> plane2 = NewHostDataPlane(network.rank(2));
  options.messenger = network.rank(2);
  options.data = plane2.get();
  std::thread worker2([&] { result = ServeExperts(&runner2, options); });
  h.magic = 0x12345678;
  h.hidden = kHidden;
  network.rank(0)->Send(&h, sizeof(h), Element::kByte, 2, protocol::kHeaderTag);
  worker2.join();
  EXPECT_TRUE(absl::IsInternal(result)) << result;
  EXPECT_NE(result.message().find("worker rank 2"), std::string::npos) << result;
}

TEST(ClusterExchangeTest, CoordinatorRefusesAMismatchedReply) {
  // Workers 1 and 2 serve; "worker 3" is the test, answering with the wrong step id.
  Cluster cluster(ReplicatedPlacement(), /*silent=*/{3});
  std::vector<float> rows(static_cast<size_t>(cluster.placement().n_slots(0) * kHidden), 1.f);
  ExpertLayout layout;
  layout.layer = 0;
  layout.hidden = kHidden;
  for (int s = 0; s <= cluster.placement().n_slots(0); ++s) layout.slot_offsets.push_back(s);
  const int64_t rank3_rows = cluster.placement().CountSlots(3, 0);
  std::thread fake([&] {
    Messenger* m = cluster.network().rank(3);
    StepHeader h;
    std::vector<int64_t> counts(static_cast<size_t>(layout.n_slots()));
    std::vector<int32_t> ids(static_cast<size_t>(rank3_rows));
    std::vector<float> in(static_cast<size_t>(rank3_rows * kHidden));
    m->Recv(&h, sizeof(h), Element::kByte, 0, protocol::kHeaderTag);
    m->Recv(counts.data(), layout.n_slots(), Element::kInt64, 0, protocol::kCountsTag);
    m->Recv(ids.data(), rank3_rows, Element::kInt32, 0, protocol::kIdsTag);
    ASSERT_TRUE(m->Take()->Wait("fake worker", WaitLimits{5}).ok());
    std::unique_ptr<DataPlane> plane = NewHostDataPlane(m);
    // The rows in and back, slot by slot, as a real worker would.
    const std::vector<ExpertSlot>& slots = cluster.placement().slots(0);
    int64_t at = 0;
    for (int s = 0; s < layout.n_slots(); ++s) {
      if (slots[s].rank == 3) plane->Recv(in.data() + (at++) * kHidden, kHidden, 0);
    }
    ASSERT_TRUE(plane->Flush(5, "fake rows", nullptr).ok());
    at = 0;
    for (int s = 0; s < layout.n_slots(); ++s) {
      if (slots[s].rank == 3) plane->Send(in.data() + (at++) * kHidden, kHidden, 0);
    }
    ASSERT_TRUE(plane->Flush(5, "fake outputs", nullptr).ok());
    const ReplyHeader reply{kReplyMagic, h.layer, h.step_id + 5, h.n_rows, 0.0};
    m->Send(&reply, sizeof(reply), Element::kByte, 0, protocol::kReplyTag);
    (void)m->Take();
  });
  std::vector<float> out(rows.size());
  const absl::Status status = cluster.exchange().Dispatch(layout, rows.data(), out.data());
  fake.join();
  EXPECT_TRUE(absl::IsInternal(status)) << status;
  EXPECT_NE(status.message().find("worker rank 3 answered step 6"), std::string::npos) << status;
  EXPECT_NE(status.message().find("protocol mismatch"), std::string::npos) << status;
}

TEST(ClusterExchangeTest, PlacementCommitMovesEveryRankAtOneStep) {
  Cluster cluster(ReplicatedPlacement());
  CommitWatcher watcher(&cluster);
  cluster.registry().Subscribe(&watcher);
  absl::StatusOr<ExpertPlacement> contiguous =
      ExpertPlacement::Contiguous(kLayers, kExperts, kWorkers);
  ASSERT_TRUE(contiguous.ok());
  auto next = std::make_shared<const ExpertPlacement>(*contiguous);
  ASSERT_TRUE(cluster.exchange().BeginPlacement(next, 2).ok());
  absl::StatusOr<PlacementProgress> progress = cluster.exchange().PollPlacement();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->ready);
  ASSERT_TRUE(cluster.exchange().CommitPlacement().ok());
  EXPECT_EQ(cluster.exchange().placement_epoch(), 2u);
  // The registry committed once, before any worker switched (telemetry counts against the new
  // placement before a worker can report under it); then every worker switched.
  EXPECT_EQ(watcher.epochs, std::vector<uint32_t>{2});
  EXPECT_EQ(watcher.slots_in_force, kExperts);
  EXPECT_EQ(watcher.workers_switched_before, 0);
  for (int r = 1; r <= kWorkers; ++r) EXPECT_EQ(cluster.switcher(r).commits, 1) << r;
  EXPECT_EQ(cluster.registry().current().placement, next);
  EXPECT_EQ(cluster.exchange().placement().n_slots(0), kExperts);  // no replicas any more
  // Dispatches now follow the new placement on both sides.
  std::mt19937 rng(5);
  for (int step = 0; step < 6; ++step) {
    std::vector<float> rows;
    const ExpertLayout layout = RandomLayout(*next, step % kLayers, &rng, &rows);
    std::vector<float> out(rows.size(), NAN);
    ASSERT_TRUE(cluster.exchange().Dispatch(layout, rows.data(), out.data()).ok());
    EXPECT_EQ(out, Reference(*next, layout, rows));
  }
  // An epoch not above the one in force is refused before anything is sent.
  EXPECT_TRUE(absl::IsInvalidArgument(cluster.exchange().BeginPlacement(next, 2)));
  EXPECT_TRUE(cluster.Shutdown().ok());
}

TEST(ClusterExchangeTest, AbortKeepsThePlacementInForce) {
  Cluster cluster(ReplicatedPlacement());
  absl::StatusOr<ExpertPlacement> contiguous =
      ExpertPlacement::Contiguous(kLayers, kExperts, kWorkers);
  ASSERT_TRUE(contiguous.ok());
  ASSERT_TRUE(cluster.exchange()
                  .BeginPlacement(std::make_shared<const ExpertPlacement>(*contiguous), 2)
                  .ok());
  ASSERT_TRUE(cluster.exchange().AbortPlacement().ok());
  EXPECT_EQ(cluster.exchange().placement_epoch(), 1u);
  EXPECT_EQ(cluster.registry().current().placement.get(), &cluster.placement());
  EXPECT_TRUE(absl::IsFailedPrecondition(cluster.exchange().CommitPlacement()));  // nothing begun
  std::mt19937 rng(9);
  std::vector<float> rows;
  const ExpertLayout layout = RandomLayout(cluster.placement(), 0, &rng, &rows);
  std::vector<float> out(rows.size(), NAN);
  ASSERT_TRUE(cluster.exchange().Dispatch(layout, rows.data(), out.data()).ok());
  EXPECT_EQ(out, Reference(cluster.placement(), layout, rows));
  EXPECT_TRUE(cluster.Shutdown().ok());
  for (int r = 1; r <= kWorkers; ++r) EXPECT_EQ(cluster.switcher(r).aborts, 1) << r;
}

TEST(ClusterExchangeTest, WorkerWithoutASwitcherRefusesAPlacementNamingItself) {
  Cluster cluster(ReplicatedPlacement(), {}, /*switchers=*/false);
  absl::StatusOr<ExpertPlacement> contiguous =
      ExpertPlacement::Contiguous(kLayers, kExperts, kWorkers);
  ASSERT_TRUE(contiguous.ok());
  const absl::Status begun =
      cluster.exchange().BeginPlacement(std::make_shared<const ExpertPlacement>(*contiguous), 2);
  EXPECT_TRUE(absl::IsFailedPrecondition(begun)) << begun;
  EXPECT_NE(begun.message().find("worker rank 1 refused the new placement"), std::string::npos)
      << begun;
  EXPECT_EQ(cluster.exchange().placement_epoch(), 1u);
  EXPECT_TRUE(cluster.Shutdown().ok());
}

// The messenger's own contract: per (peer, tag) order, and a message too big for its receive.
TEST(InProcessMessengerTest, MatchesInOrderPerPeerAndTagAndRefusesOverflow) {
  InProcessNetwork network(3);
  int32_t a = 1, b = 2, c = 3;
  network.rank(1)->Send(&a, 1, Element::kInt32, 0, 7);
  network.rank(2)->Send(&c, 1, Element::kInt32, 0, 7);
  network.rank(1)->Send(&b, 1, Element::kInt32, 0, 7);
  int32_t got[3] = {};
  network.rank(0)->Recv(&got[0], 1, Element::kInt32, 1, 7);
  network.rank(0)->Recv(&got[1], 1, Element::kInt32, 1, 7);
  network.rank(0)->Recv(&got[2], 1, Element::kInt32, 2, 7);
  ASSERT_TRUE(network.rank(0)->Take()->Wait("three", WaitLimits{1}).ok());
  EXPECT_EQ(got[0], 1);
  EXPECT_EQ(got[1], 2);
  EXPECT_EQ(got[2], 3);

  int64_t big[2] = {5, 6};
  network.rank(1)->Send(big, 2, Element::kInt64, 0, 8);
  int64_t small = 0;
  network.rank(0)->Recv(&small, 1, Element::kInt64, 1, 8);
  const absl::Status overflow = network.rank(0)->Take()->Wait("overflow", WaitLimits{1});
  EXPECT_TRUE(absl::IsInternal(overflow)) << overflow;
  EXPECT_NE(overflow.message().find("16 bytes from rank 1"), std::string::npos) << overflow;

  // A receive never matched times out naming its peer, and one withdrawn leaves nothing behind.
  int32_t never = 0;
  network.rank(0)->Recv(&never, 1, Element::kInt32, 2, 9);
  const absl::Status late = network.rank(0)->Take()->Wait("late", WaitLimits{0.2});
  EXPECT_TRUE(absl::IsUnavailable(late)) << late;
  EXPECT_NE(late.message().find("rank 2 did not answer"), std::string::npos) << late;
  network.rank(2)->Send(&c, 1, Element::kInt32, 0, 9);  // arrives after the receive was withdrawn
  int32_t later = 0;
  network.rank(0)->Recv(&later, 1, Element::kInt32, 2, 9);
  ASSERT_TRUE(network.rank(0)->Take()->Wait("later", WaitLimits{1}).ok());
  EXPECT_EQ(later, 3);
  EXPECT_EQ(never, 0);
}

}  // namespace
}  // namespace moe
