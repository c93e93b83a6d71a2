// Rebalancer: when it decides to move experts and why not, a move driven to its switch through a
// fake exchange (the aggregator then counts against the new placement, in a new epoch), a worker's
// failure to load (the old placement stays, the failure is recorded and returned), one move at a
// time, the periodic trigger, and shutdown releasing a waiting request.
#include "coordinator/engine/rebalancer.h"

#include <thread>

#include "gtest/gtest.h"
#include "tests/coordinator/inference/routing_choices.h"

namespace moe {
namespace {

// Records the calls; Poll says "loading" `polls_until_ready` times, then ready (or fails).
class FakeMover : public PlacementMover {
 public:
  absl::Status BeginPlacement(std::shared_ptr<const ExpertPlacement> next,
                              uint32_t epoch) override {
    ++begun;
    pending = std::move(next);
    pending_epoch = epoch;
    return refuse;
  }
  absl::StatusOr<PlacementProgress> PollPlacement() override {
    ++polls;
    if (polls <= polls_until_ready) return PlacementProgress{false, 1, 0, 0.5};
    if (!fail.ok()) return fail;
    return PlacementProgress{true, 0, 7, 1.5};
  }
  // As the cluster exchange does: through the registry, whose subscribers follow.
  absl::Status CommitPlacement() override {
    ++commits;
    committed = pending;
    registry->Commit(pending, pending_epoch);
    return absl::OkStatus();
  }
  absl::Status AbortPlacement() override {
    ++aborts;
    return absl::OkStatus();
  }

  int begun = 0, polls = 0, commits = 0, aborts = 0;
  int polls_until_ready = 2;
  absl::Status refuse, fail;
  uint32_t pending_epoch = 0;
  std::shared_ptr<const ExpertPlacement> pending, committed;
  PlacementRegistry* registry = nullptr;
};

using testing::Choices;

// Two layers of 4 experts on 2 workers (rank 1: experts 0-1, rank 2: 2-3), 3 slots each.
struct Fixture {
  double now = 0;
  ExpertPlacement placement = *ExpertPlacement::Contiguous(2, 4, 2);
  std::unique_ptr<PlacementRegistry> registry = PlacementRegistry::Borrowing(&placement);
  std::unique_ptr<LoadAggregator> agg;
  FakeMover mover;
  std::unique_ptr<Rebalancer> rebalancer;

  explicit Fixture(double interval = 0) {
    LoadAggregatorOptions o;
    o.n_layers = 2;
    o.n_experts = 4;
    o.top_k = 2;
    o.placement = &placement;
    o.now_seconds = [this] { return now; };
    agg = std::make_unique<LoadAggregator>(std::move(o));
    registry->Subscribe(agg.get());
    mover.registry = registry.get();
    RebalanceOptions r;
    r.interval_seconds = interval;
    r.slots_per_worker = 3;
    r.poll_interval_seconds = 0;
    r.now_seconds = [this] { return now; };
    rebalancer = std::make_unique<Rebalancer>(agg.get(), &mover, registry.get(), 2, 4, r);
  }

  // Every token picks experts 0 and 1: all of rank 1's, none of rank 2's (balancedness 0.5).
  void SkewedTraffic(int tokens) {
    std::vector<RoutedToken> t;
    std::vector<std::vector<int32_t>> rows;
    for (int i = 0; i < tokens; ++i) {
      t.push_back({1, i, 5});
      rows.push_back({0, 1});
    }
    agg->OnStepBegin();
    agg->OnForward(t, {Choices(rows), Choices(rows)});
    agg->OnStepEnd();
  }
  void EvenTraffic() {
    agg->OnStepBegin();
    agg->OnForward(std::vector<RoutedToken>{{1, 0, 5}, {1, 1, 5}},
                   {Choices({{0, 2}, {1, 3}}), Choices({{0, 2}, {1, 3}})});
    agg->OnStepEnd();
  }

  // Request on another thread while this one ticks, as the server's engine thread does.
  absl::StatusOr<RebalanceOutcome> RequestWhileTicking(bool force) {
    absl::StatusOr<RebalanceOutcome> result = absl::UnknownError("not run");
    std::atomic<bool> done{false};
    std::thread requester([&] {
      result = rebalancer->Request(force, absl::Now() + absl::Seconds(30));
      done = true;
    });
    while (!done) {
      EXPECT_TRUE(rebalancer->Tick().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    requester.join();
    return result;
  }
};

TEST(RebalancerTest, SaysWhyItDoesNothing) {
  Fixture f;
  absl::StatusOr<RebalancePlan> plan = f.rebalancer->Plan(false);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->skipped, "no routing in the load window yet");
  f.EvenTraffic();
  plan = f.rebalancer->Plan(false);
  ASSERT_TRUE(plan.ok());
  EXPECT_DOUBLE_EQ(plan->balancedness_before, 1.0);
  EXPECT_NE(plan->skipped.find("already at or above the threshold"), std::string::npos)
      << plan->skipped;
  // Forced, the plan may add replicas but cannot beat 1.0; it still moves nothing needlessly.
  plan = f.rebalancer->Plan(true);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->skipped, "the plan is the placement in force");
  EXPECT_EQ(f.mover.begun, 0);
}

TEST(RebalancerTest, MovesToThePlanAtOneTickAndStartsANewEpoch) {
  Fixture f;
  f.SkewedTraffic(10);
  const uint32_t telemetry_epoch = f.agg->Snapshot().epoch;
  absl::StatusOr<RebalancePlan> dry = f.rebalancer->Plan(false);
  ASSERT_TRUE(dry.ok());
  EXPECT_TRUE(dry->skipped.empty()) << dry->skipped;
  EXPECT_DOUBLE_EQ(dry->balancedness_before, 0.5);
  // Experts 0 and 1 carry everything: one on each worker is the optimum (1.0).
  EXPECT_DOUBLE_EQ(dry->predicted_balancedness, 1.0);
  EXPECT_EQ(f.mover.begun, 0);  // planning moves nothing

  absl::StatusOr<RebalanceOutcome> out = f.RequestWhileTicking(false);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->applied);
  EXPECT_EQ(f.mover.begun, 1);
  EXPECT_EQ(f.mover.commits, 1);
  EXPECT_EQ(f.mover.pending_epoch, 2u);
  EXPECT_GE(f.mover.polls, 3);  // loading twice, then ready: the switch waited for the workers
  const RebalancePlan& plan = out->plan;
  EXPECT_EQ(f.mover.committed, plan.placement);
  // Each worker now hosts one of experts 0 and 1, and no budget is exceeded.
  for (int l = 0; l < 2; ++l) {
    EXPECT_NE(plan.placement->owner(l, 0), plan.placement->owner(l, 1));
  }
  EXPECT_TRUE(plan.placement->CheckSlotBudget(3).ok());

  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.placement.epoch, 2u);
  EXPECT_EQ(s.placement.rearrangements, 1);
  EXPECT_FALSE(s.placement.in_progress);
  EXPECT_EQ(s.epoch, telemetry_epoch + 1);  // counts restart under the new placement
  EXPECT_EQ(s.steps, 0);
  EXPECT_EQ(f.agg->placement(), plan.placement);
  ASSERT_TRUE(s.placement.has_last);
  EXPECT_TRUE(s.placement.last.ok);
  EXPECT_EQ(s.placement.last.trigger, "request");
  EXPECT_DOUBLE_EQ(s.placement.last.balancedness_before, 0.5);
  EXPECT_DOUBLE_EQ(s.placement.last.predicted_balancedness, 1.0);
  EXPECT_EQ(s.placement.last.experts_loaded, 7);
  EXPECT_DOUBLE_EQ(s.placement.last.load_seconds, 1.5);
  // The same traffic now routes evenly over the workers, as predicted.
  f.SkewedTraffic(10);
  EXPECT_DOUBLE_EQ(f.agg->Snapshot().worker_imbalance.balancedness, 1.0);
}

TEST(RebalancerTest, AWorkerThatCannotLoadKeepsTheOldPlacement) {
  Fixture f;
  f.mover.fail =
      absl::FailedPreconditionError("worker rank 2 could not load its new experts: no space");
  f.SkewedTraffic(10);
  absl::StatusOr<RebalanceOutcome> out = f.RequestWhileTicking(false);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(out.status().message().find("worker rank 2"), std::string::npos) << out.status();
  EXPECT_EQ(f.mover.commits, 0);
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.placement.epoch, 1u);
  EXPECT_EQ(s.placement.failed_rearrangements, 1);
  EXPECT_EQ(s.placement.rearrangements, 0);
  EXPECT_FALSE(s.placement.last.ok);
  EXPECT_NE(s.placement.last.error.find("no space"), std::string::npos);
  EXPECT_EQ(s.steps, 1);  // no new epoch
  EXPECT_EQ(f.agg->placement().get(), &f.placement);

  // A refusal at the start is the same: recorded, returned, nothing switched.
  f.mover.refuse =
      absl::FailedPreconditionError("worker rank 1 refused the new placement: bad table");
  out = f.RequestWhileTicking(false);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(f.agg->Snapshot().placement.failed_rearrangements, 2);
  EXPECT_EQ(f.mover.commits, 0);
}

TEST(RebalancerTest, OneMoveAtATime) {
  Fixture f;
  f.mover.polls_until_ready = 1000000;  // loads "forever"
  f.SkewedTraffic(10);
  std::thread first([&] {
    EXPECT_EQ(f.rebalancer->Request(false, absl::Now() + absl::Milliseconds(300)).status().code(),
              absl::StatusCode::kDeadlineExceeded);
  });
  while (f.mover.begun == 0) {
    ASSERT_TRUE(f.rebalancer->Tick().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(f.rebalancer->Request(false, absl::Now() + absl::Seconds(1)).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(f.agg->Snapshot().placement.in_progress);
  first.join();
  // Shutdown drops the move (the workers are told) and refuses new requests.
  f.rebalancer->Stop(/*cluster_usable=*/true);
  EXPECT_EQ(f.mover.aborts, 1);
  EXPECT_EQ(f.agg->Snapshot().placement.failed_rearrangements, 1);
  EXPECT_EQ(f.rebalancer->Request(false, absl::Now() + absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(RebalancerTest, ChecksPeriodicallyWhenToldTo) {
  Fixture f(/*interval=*/10);
  f.SkewedTraffic(10);
  ASSERT_TRUE(f.rebalancer->Tick().ok());
  EXPECT_EQ(f.mover.begun, 0);  // not yet due
  f.now = 10;
  f.SkewedTraffic(10);
  ASSERT_TRUE(f.rebalancer->Tick().ok());
  EXPECT_EQ(f.mover.begun, 1);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(f.rebalancer->Tick().ok());
  EXPECT_EQ(f.mover.commits, 1);
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.placement.epoch, 2u);
  EXPECT_EQ(s.placement.last.trigger, "interval");
  // Balanced now: the next check skips.
  f.now = 20;
  f.SkewedTraffic(10);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(f.rebalancer->Tick().ok());
  EXPECT_EQ(f.mover.begun, 1);
}

}  // namespace
}  // namespace moe
