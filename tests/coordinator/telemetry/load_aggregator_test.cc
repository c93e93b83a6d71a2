// LoadAggregator: counts, windows, locality, straggler cost, resets and worker reports, driven by
// hand-made steps whose right answers are worked out in the comments.
#include "coordinator/telemetry/load_aggregator.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/coordinator/inference/routing_choices.h"

namespace moe {
namespace {

using testing::Choices;

struct Fixture {
  double now = 0;
  ExpertPlacement placement = *ExpertPlacement::Contiguous(2, 4, 2);  // rank 1: e0-1, rank 2: e2-3
  std::unique_ptr<WorkerLiveness> liveness;
  std::unique_ptr<LoadAggregator> agg;

  Fixture() { Make(); }
  explicit Fixture(ExpertPlacement p) : placement(std::move(p)) { Make(); }

  void Make() {
    LoadAggregatorOptions o;
    o.n_layers = 2;
    o.n_experts = 4;
    o.top_k = 2;
    o.placement = &placement;
    o.window_seconds = 60;
    o.report_interval_seconds = 0.5;
    o.now_seconds = [this] { return now; };
    liveness = std::make_unique<WorkerLiveness>(placement.n_workers(), o.report_interval_seconds,
                                                o.now_seconds);
    o.liveness = liveness.get();
    agg = std::make_unique<LoadAggregator>(std::move(o));
  }

  void Step(std::vector<RoutedToken> tokens, std::vector<Routing> routing) {
    agg->OnStepBegin();
    agg->OnForward(tokens, routing);
    agg->OnStepEnd();
  }
};

TEST(LoadAggregatorTest, FreshSnapshotIsZeroAndBalanced) {
  Fixture f;
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.epoch, 1u);
  EXPECT_EQ(s.steps, 0);
  ASSERT_EQ(s.layers.size(), 2u);
  for (const auto& l : s.layers) {
    EXPECT_EQ(l.expert_tokens.size(), 4u);
    for (int64_t c : l.expert_tokens) EXPECT_EQ(c, 0);
    EXPECT_EQ(l.expert_imbalance.balancedness, 1.0);
    EXPECT_EQ(l.expert_imbalance.imbalance_ratio, 0.0);
    EXPECT_EQ(l.locality.pairs, 0);
  }
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_EQ(s.workers[0].seconds_since_report, -1);
  EXPECT_FALSE(s.workers[0].alive);
  EXPECT_NEAR(s.locality.chance_set_overlap, 1.0 - 1.0 / 6.0, 1e-12);  // 1 - C(2,2)/C(4,2)
}

TEST(LoadAggregatorTest, CountsImbalanceAndWorkers) {
  Fixture f;
  // Layer 0: rows choose {0,1} {0,2} {0,1}: e0 3, e1 2, e2 1, e3 0. Layer 1: {3,2} x3: e2 3, e3 3.
  f.Step({{7, 0, 10}, {7, 1, 11}, {7, 2, 12}},
         {Choices({{0, 1}, {0, 2}, {0, 1}}), Choices({{3, 2}, {3, 2}, {3, 2}})});
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.steps, 1);
  EXPECT_EQ(s.tokens, 3);
  EXPECT_EQ(s.layers[0].expert_tokens, (std::vector<int64_t>{3, 2, 1, 0}));
  // mean 1.5, max 3: balancedness 0.5, ratio 1; std sqrt(1.25) -> CV 0.745...
  EXPECT_DOUBLE_EQ(s.layers[0].expert_imbalance.balancedness, 0.5);
  EXPECT_DOUBLE_EQ(s.layers[0].expert_imbalance.imbalance_ratio, 1.0);
  EXPECT_NEAR(s.layers[0].expert_imbalance.cv, std::sqrt(1.25) / 1.5, 1e-12);
  // Workers per layer: layer 0 {5, 1}, layer 1 {0, 6}; routed totals 5 and 7.
  EXPECT_EQ(s.layers[0].worker_tokens[0], 5);
  EXPECT_EQ(s.layers[0].worker_tokens[1], 1);
  EXPECT_EQ(s.workers[0].routed_tokens, 5);
  EXPECT_EQ(s.workers[1].routed_tokens, 7);
  // Overall experts: means 1.5 + 1.5, maxima 3 + 3 -> 0.5.
  EXPECT_DOUBLE_EQ(s.expert_imbalance.balancedness, 0.5);
  // Overall workers: means 3 + 3, maxima 5 + 6 -> 6 / 11.
  EXPECT_DOUBLE_EQ(s.worker_imbalance.balancedness, 6.0 / 11.0);
}

TEST(LoadAggregatorTest, TemporalLocalityFollowsEachSequenceAcrossSteps) {
  Fixture f;
  // Sequence 1 at positions 0,1 in one step, 2 in the next; sequence 2 interleaved at 5 then 7
  // (a gap: no pair). Layer 0 choices, seq 1: {0,1} -> {0,2} (repeat, overlap) -> {3,2}
  // (no repeat, overlap on 2). Seq 2: {1,3} then {1,0} but not consecutive.
  f.Step({{1, 0, 1}, {2, 5, 1}, {1, 1, 1}},
         {Choices({{0, 1}, {1, 3}, {0, 2}}), Choices({{0, 1}, {0, 1}, {2, 3}})});
  f.Step({{1, 2, 1}, {2, 7, 1}}, {Choices({{3, 2}, {1, 0}}), Choices({{1, 0}, {0, 1}})});
  const LoadSnapshot s = f.agg->Snapshot();
  const RoutingLocality& l0 = s.layers[0].locality;
  EXPECT_EQ(l0.pairs, 2);
  EXPECT_EQ(l0.first_choice_repeats, 1);
  EXPECT_EQ(l0.set_overlaps, 2);
  // Layer 1, seq 1: {0,1} -> {2,3} (nothing) -> {1,0} (no repeat: 2 vs 1; no overlap).
  const RoutingLocality& l1 = s.layers[1].locality;
  EXPECT_EQ(l1.pairs, 2);
  EXPECT_EQ(l1.first_choice_repeats, 0);
  EXPECT_EQ(l1.set_overlaps, 0);
  EXPECT_EQ(s.locality.pairs, 4);
  EXPECT_DOUBLE_EQ(s.locality.set_overlap_ratio, 0.5);
  // A finished sequence forgets its last token: the same id starting again makes no pair.
  f.agg->OnSequenceEnd(1);
  f.Step({{1, 3, 1}}, {Choices({{3, 2}}), Choices({{1, 0}})});
  EXPECT_EQ(f.agg->Snapshot().locality.pairs, 4);
}

TEST(LoadAggregatorTest, WindowForgetsOldSteps) {
  Fixture f;
  f.Step({{1, 0, 1}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  f.now = 30;
  f.Step({{1, 1, 1}}, {Choices({{2, 3}}), Choices({{0, 1}})});
  LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.layers[0].expert_window_tokens[0], 1);
  EXPECT_EQ(s.layers[0].expert_window_tokens[2], 1);
  f.now = 75;  // the first step is more than 60 s old, the second is not
  s = f.agg->Snapshot();
  EXPECT_EQ(s.layers[0].expert_window_tokens[0], 0);
  EXPECT_EQ(s.layers[0].expert_window_tokens[2], 1);
  EXPECT_EQ(s.layers[0].expert_tokens[0], 1);  // totals keep everything
  f.now = 200;
  s = f.agg->Snapshot();
  for (int64_t c : s.layers[0].expert_window_tokens) EXPECT_EQ(c, 0);
}

TEST(LoadAggregatorTest, StragglerCostIsSlowestMinusMean) {
  Fixture f;
  const std::vector<double> compute = {0, 0.010, 0.004};  // by rank; mean 7 ms, slowest 10 ms
  const std::vector<int64_t> rows = {0, 5, 1};
  f.agg->OnExchange(ExchangeRecord{1, 0.012, compute, rows});
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_NEAR(s.layers[1].straggler_seconds, 0.003, 1e-12);
  EXPECT_NEAR(s.straggler_seconds, 0.003, 1e-12);
  EXPECT_NEAR(s.exchange_seconds, 0.012, 1e-12);
  EXPECT_EQ(s.exchanges, 1);
}

WorkerReport Report(int rank, uint32_t epoch, uint64_t sequence, int64_t tokens) {
  WorkerReport r;
  r.rank = rank;
  r.epoch = epoch;
  r.sequence = sequence;
  r.compute_seconds = 0.5;
  r.experts.push_back(ExpertLoad{0, 0, tokens, 0.0});
  return r;
}

// After a live re-placement the aggregator counts against the new placement in a new epoch at
// once; a report still counting the old placement (its epoch is older) keeps the worker alive but
// shows no counts, and a report of the new epoch must fit the new placement.
TEST(LoadAggregatorTest, ACommittedPlacementStartsAnEpochAndReportsFollowIt) {
  Fixture f;
  f.Step({{1, 0, 5}}, {Choices({{0, 2}}), Choices({{0, 2}})});
  auto swapped = std::make_shared<const ExpertPlacement>(
      *ExpertPlacement::FromTable({{2, 2, 1, 1}, {2, 2, 1, 1}}, 2));  // rank 2 now hosts expert 0
  Rearrangement done;
  done.ok = true;
  done.epoch = 2;
  f.agg->OnPlacementCommitted(swapped, done.epoch);  // as the placement registry tells it
  f.agg->RecordRearrangement(done);
  LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.epoch, 2u);
  EXPECT_EQ(s.steps, 0);
  EXPECT_EQ(s.placement.epoch, 2u);
  EXPECT_EQ(s.placement.rearrangements, 1);
  EXPECT_EQ(s.placement.slots[0][0].rank, 2);
  // Rank 1 reports the old placement's expert 0 under epoch 1: alive, not counted.
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 1, 9)).ok());
  s = f.agg->Snapshot();
  EXPECT_TRUE(s.workers[0].alive);
  EXPECT_EQ(s.workers[0].reported_tokens, 0);
  // Under epoch 2, rank 1 no longer hosts expert 0, rank 2 does.
  EXPECT_FALSE(f.agg->OnWorkerReport(Report(1, 2, 2, 9)).ok());
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(2, 2, 1, 9)).ok());
  EXPECT_EQ(f.agg->Snapshot().workers[1].reported_tokens, 9);
  // The same routing now lands on the other ranks.
  f.Step({{1, 1, 5}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  s = f.agg->Snapshot();
  EXPECT_EQ(s.layers[0].worker_tokens, (std::vector<int64_t>{0, 2}));
}

// Lost heartbeats, for health and admission: silent for three intervals (at least 1 s), or a
// stream that ended; a worker that has not reported yet is starting, not lost.
TEST(LoadAggregatorTest, LostWorkers) {
  Fixture f;
  auto beat = [&](int rank, uint64_t sequence) {
    WorkerReport r = Report(rank, 1, sequence, 0);
    r.experts.clear();  // a heartbeat: nothing run yet
    return f.agg->OnWorkerReport(r);
  };
  EXPECT_TRUE(f.liveness->LostWorkers().empty());
  ASSERT_TRUE(beat(1, 1).ok());
  ASSERT_TRUE(beat(2, 1).ok());
  f.now = 1.4;  // three intervals of 0.5 s
  EXPECT_TRUE(f.liveness->LostWorkers().empty());
  f.now = 1.6;
  EXPECT_EQ(f.liveness->LostWorkers(), (std::vector<int>{1, 2}));
  ASSERT_TRUE(beat(1, 2).ok());
  ASSERT_TRUE(beat(2, 2).ok());
  EXPECT_TRUE(f.liveness->LostWorkers().empty());
  f.liveness->OnStreamEnded(2);
  EXPECT_EQ(f.liveness->LostWorkers(), (std::vector<int>{2}));
  EXPECT_FALSE(f.agg->Snapshot().workers[1].alive);
  ASSERT_TRUE(beat(2, 3).ok());
  EXPECT_TRUE(f.liveness->LostWorkers().empty());
}

// What the exchange's waits ask: only a closed report stream proves a worker gone; silence (a busy
// or stopped worker) is left to the step's timeout, and a worker that never reported is starting.
TEST(LoadAggregatorTest, CheckAliveFailsOnlyOnAClosedStream) {
  Fixture f;
  f.liveness->OnStreamEnded(1);
  EXPECT_TRUE(f.liveness->CheckAlive(1).ok()) << "never reported: starting, not gone";
  WorkerReport r = Report(1, 1, 1, 0);
  r.experts.clear();
  ASSERT_TRUE(f.agg->OnWorkerReport(r).ok());
  f.now = 100;  // silent far beyond three intervals
  EXPECT_TRUE(f.liveness->CheckAlive(1).ok());
  EXPECT_EQ(f.liveness->LostWorkers(), (std::vector<int>{1}));
  f.liveness->OnStreamEnded(1);
  const absl::Status gone = f.liveness->CheckAlive(1);
  EXPECT_TRUE(absl::IsUnavailable(gone));
  EXPECT_NE(gone.message().find("worker rank 1 is gone"), std::string::npos) << gone;
  EXPECT_TRUE(f.liveness->CheckAlive(2).ok());
  EXPECT_TRUE(f.liveness->CheckAlive(0).ok()) << "not a worker rank";
  r.sequence = 2;
  ASSERT_TRUE(f.agg->OnWorkerReport(r).ok());  // it reconnected
  EXPECT_TRUE(f.liveness->CheckAlive(1).ok());
}

// A report with a huge sequence number on another stream (a forger with a captured token) must
// not make the real worker's later reports look stale.
TEST(LoadAggregatorTest, SequenceNumbersOrderReportsWithinAStreamOnly) {
  Fixture f;
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 5, 9), /*stream=*/1).ok());
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, UINT64_MAX, 0), /*stream=*/2).ok());
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 6, 11), /*stream=*/1).ok());
  EXPECT_EQ(f.agg->Snapshot().workers[0].reported_tokens, 11);
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 4, 3), /*stream=*/1).ok());  // stale on its stream
  EXPECT_EQ(f.agg->Snapshot().workers[0].reported_tokens, 11);
}

TEST(LoadAggregatorTest, WorkerReportsAndHeartbeat) {
  Fixture f;
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 1, 9)).ok());
  ASSERT_TRUE(
      f.agg->OnWorkerReport(Report(1, 1, 0, 100)).ok());         // older than what we have: ignored
  EXPECT_FALSE(f.agg->OnWorkerReport(Report(5, 1, 1, 9)).ok());  // no such worker
  EXPECT_FALSE(f.agg->OnWorkerReport(Report(2, 1, 1, 9)).ok());  // rank 2 does not host expert 0
  EXPECT_FALSE(f.agg->OnWorkerReport(Report(1, 1, 2, -1)).ok());  // negative count
  WorkerReport huge = Report(1, 1, 2, int64_t{1} << 62);          // would overflow the sums
  EXPECT_FALSE(f.agg->OnWorkerReport(huge).ok());
  WorkerReport nan = Report(1, 1, 2, 1);
  nan.idle_seconds = std::nan("");
  EXPECT_FALSE(f.agg->OnWorkerReport(nan).ok());
  f.now = 1.0;
  LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.workers[0].reported_tokens, 9);
  EXPECT_EQ(s.workers[0].reports, 1);
  EXPECT_DOUBLE_EQ(s.workers[0].seconds_since_report, 1.0);
  EXPECT_TRUE(s.workers[0].alive);  // within 3 intervals of 0.5 s
  EXPECT_EQ(s.workers[1].reports, 0);
  f.now = 1.6;
  EXPECT_FALSE(f.agg->Snapshot().workers[0].alive);
}

TEST(LoadAggregatorTest, WorkersCountTheRowsTheirReplicasWereGiven) {
  // Expert 0 on ranks 1 and 2 (slots 0, 1); experts 1 on rank 1, 2 and 3 on rank 2.
  Fixture f(*ExpertPlacement::FromJson(R"({"experts": [[1, 2], 1, 2, 2]})", 2, 4, 2));
  // Layer 0 as above: expert 1's 2 choices to rank 1, expert 2's 1 to rank 2; expert 0's three
  // split by the rule: rank 2 (1 < 2), a tie (slot 0, rank 1), rank 2 (2 < 3): {3, 3}. Layer 1:
  // experts 3 and 2 only, {0, 6}.
  f.Step({{7, 0, 10}, {7, 1, 11}, {7, 2, 12}},
         {Choices({{0, 1}, {0, 2}, {0, 1}}), Choices({{3, 2}, {3, 2}, {3, 2}})});
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.layers[0].expert_tokens, (std::vector<int64_t>{3, 2, 1, 0}));
  EXPECT_EQ(s.layers[0].worker_tokens, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(s.layers[1].worker_tokens, (std::vector<int64_t>{0, 6}));
  EXPECT_EQ(s.workers[0].routed_tokens, 3);
  EXPECT_EQ(s.workers[1].routed_tokens, 9);
  EXPECT_DOUBLE_EQ(s.layers[0].worker_imbalance.balancedness, 1.0);
  // Either replica's rank may report expert 0; a rank hosting no replica of an expert may not.
  EXPECT_TRUE(f.agg->OnWorkerReport(Report(2, 1, 1, 2)).ok());
  EXPECT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 1, 1)).ok());
  WorkerReport stray = Report(1, 1, 2, 1);
  stray.experts[0].expert = 2;
  EXPECT_FALSE(f.agg->OnWorkerReport(stray).ok());
}

TEST(LoadAggregatorTest, ResetZeroesAtOnceWhenIdleAndAfterTheRunningStep) {
  Fixture f;
  f.Step({{1, 0, 1}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 1, 2)).ok());
  EXPECT_EQ(f.agg->Reset(), 2u);
  LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.epoch, 2u);
  EXPECT_EQ(s.steps, 0);
  EXPECT_EQ(s.layers[0].expert_tokens[0], 0);
  EXPECT_EQ(s.workers[0].reported_tokens, 0);  // its report is from epoch 1
  EXPECT_EQ(s.workers[0].reports, 1);          // but it is still heard from
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 2, 2, 4)).ok());
  EXPECT_EQ(f.agg->Snapshot().workers[0].reported_tokens, 4);

  // During a step the reset waits for the step's end: the step still counts in the old epoch,
  // and the exchanges of that step carry the old epoch too.
  f.agg->OnStepBegin();
  EXPECT_EQ(f.agg->Reset(), 3u);
  EXPECT_EQ(f.agg->epoch()->load(), 2u);
  f.agg->OnForward(std::vector<RoutedToken>{{1, 1, 1}},
                   std::vector<Routing>{Choices({{0, 1}}), Choices({{0, 1}})});
  EXPECT_EQ(f.agg->Snapshot().steps, 1);
  f.agg->OnStepEnd();
  EXPECT_EQ(f.agg->epoch()->load(), 3u);
  EXPECT_EQ(f.agg->Snapshot().steps, 0);
}

// The window's figures beside the expert counts: steps, tokens, locality, worker imbalance and
// the exchanges' costs, all dropping out together once their bucket leaves the window.
TEST(LoadAggregatorTest, WindowFiguresDropOldData) {
  Fixture f;
  const std::vector<double> slow = {0, 0.010, 0.004};  // straggler 3 ms a layer
  const std::vector<int64_t> rows = {0, 2, 2};
  // t = 0: sequence 1 at positions 0 and 1 ({0,1} then {0,2} on layer 0, {3,2} twice on layer 1:
  // 2 pairs, 2 first-choice repeats, 2 overlaps); two exchanges.
  f.agg->OnStepBegin();
  f.agg->OnExchange(ExchangeRecord{0, 0.020, slow, rows});
  f.agg->OnExchange(ExchangeRecord{1, 0.020, slow, rows});
  f.agg->OnForward(std::vector<RoutedToken>{{1, 0, 1}, {1, 1, 1}},
                   std::vector<Routing>{Choices({{0, 1}, {0, 2}}), Choices({{3, 2}, {3, 2}})});
  f.agg->OnStepEnd();
  f.now = 30;  // position 2 ({3,1} and {3,2}: layer 1 repeats and overlaps; layer 0 neither): one
               // exchange
  f.agg->OnStepBegin();
  f.agg->OnExchange(ExchangeRecord{0, 0.050, slow, rows});
  f.agg->OnForward(std::vector<RoutedToken>{{1, 2, 1}},
                   std::vector<Routing>{Choices({{3, 1}}), Choices({{3, 2}})});
  f.agg->OnStepEnd();

  LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.window.steps, 2);
  EXPECT_EQ(s.window.tokens, 3);
  EXPECT_EQ(s.window.exchanges, 3);
  EXPECT_NEAR(s.window.exchange_seconds, 0.090, 1e-12);
  EXPECT_NEAR(s.window.straggler_seconds, 0.009, 1e-12);
  EXPECT_EQ(s.window.locality.pairs, 4);
  EXPECT_EQ(s.window.locality.first_choice_repeats, 3);
  EXPECT_EQ(s.window.locality.set_overlaps, 3);
  EXPECT_DOUBLE_EQ(s.window.locality.set_overlap_ratio, 0.75);
  // Workers (rank 1: e0-1, rank 2: e2-3): layer 0 {4, 2}, layer 1 {0, 6} -> means 3 + 3, maxima
  // 4 + 6: balancedness 0.6.
  EXPECT_DOUBLE_EQ(s.window.worker_imbalance.balancedness, 0.6);
  EXPECT_DOUBLE_EQ(s.window.worker_imbalance.balancedness, s.worker_imbalance.balancedness);

  f.now = 75;  // the first step is more than 60 s old, the second is not
  s = f.agg->Snapshot();
  EXPECT_EQ(s.window.steps, 1);
  EXPECT_EQ(s.window.tokens, 1);
  EXPECT_EQ(s.window.exchanges, 1);
  EXPECT_NEAR(s.window.exchange_seconds, 0.050, 1e-12);
  EXPECT_NEAR(s.window.straggler_seconds, 0.003, 1e-12);
  EXPECT_EQ(s.window.locality.pairs, 2);
  EXPECT_EQ(s.window.locality.first_choice_repeats, 1);
  // Layer 0 {3,1}: ranks {1, 1}; layer 1 {3,2}: {0, 2} -> means 1 + 1, maxima 1 + 2.
  EXPECT_DOUBLE_EQ(s.window.worker_imbalance.balancedness, 2.0 / 3.0);
  EXPECT_EQ(s.steps, 2);  // totals keep everything
  EXPECT_EQ(s.exchanges, 3);

  f.now = 200;
  s = f.agg->Snapshot();
  EXPECT_EQ(s.window.steps, 0);
  EXPECT_EQ(s.window.tokens, 0);
  EXPECT_EQ(s.window.exchanges, 0);
  EXPECT_EQ(s.window.straggler_seconds, 0);
  EXPECT_EQ(s.window.locality.pairs, 0);
  EXPECT_EQ(s.window.worker_imbalance.balancedness, 1.0);  // nothing routed: balanced
  EXPECT_NEAR(s.window.locality.chance_set_overlap, 1.0 - 1.0 / 6.0, 1e-12);

  // A reset empties the window at once.
  f.Step({{2, 0, 1}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  EXPECT_EQ(f.agg->Snapshot().window.steps, 1);
  f.agg->Reset();
  EXPECT_EQ(f.agg->Snapshot().window.steps, 0);
}

SequenceInfo Info(const std::string& label, int prompt, int max_tokens) {
  SequenceInfo info;
  info.label = label;
  info.prompt_tokens = prompt;
  info.max_tokens = max_tokens;
  return info;
}

TEST(LoadAggregatorTest, CountsPerLabel) {
  Fixture f;
  f.agg->OnSequenceStart(1, Info("chat", 3, 8));
  f.agg->OnSequenceStart(2, Info("", 1, 4));
  // Prefill: chat's 3 prompt tokens and the other's 1; then one decode token each. A row of a
  // sequence nobody started (a tool's) counts under "" without a request.
  f.Step({{1, 0, 5, true}, {1, 1, 6, true}, {1, 2, 7, true}, {2, 0, 5, true}},
         {Choices({{0, 1}, {0, 1}, {0, 2}, {3, 2}}), Choices({{3, 2}, {3, 2}, {3, 2}, {0, 1}})});
  f.Step({{1, 3, 8, false}, {2, 1, 9, false}, {9, 0, 1, false}},
         {Choices({{1, 0}, {2, 3}, {0, 1}}), Choices({{2, 3}, {1, 0}, {0, 1}})});
  const LoadSnapshot s = f.agg->Snapshot();
  ASSERT_EQ(s.labels.size(), 2u);
  const LabelLoad& chat = s.labels[0];
  EXPECT_EQ(chat.label, "chat");
  EXPECT_EQ(chat.requests, 1);
  EXPECT_EQ(chat.prompt_tokens, 3);
  EXPECT_EQ(chat.generated_tokens, 1);
  // [layer * 4 + expert]: layer 0 {0,1} {0,1} {0,2} {1,0} -> e0 4, e1 3, e2 1; layer 1 {3,2} x3,
  // {2,3} -> e2 4, e3 4.
  EXPECT_EQ(chat.expert_tokens, (std::vector<int64_t>{4, 3, 1, 0, 0, 0, 4, 4}));
  const LabelLoad& none = s.labels[1];
  EXPECT_EQ(none.label, "");
  EXPECT_EQ(none.requests, 1);
  EXPECT_EQ(none.prompt_tokens, 1);
  EXPECT_EQ(none.generated_tokens, 2);  // sequence 2's decode token and the unknown sequence's
  // Sequences 2 and 9: layer 0 {3,2} {2,3} {0,1}; layer 1 {0,1} {1,0} {0,1}.
  EXPECT_EQ(none.expert_tokens, (std::vector<int64_t>{1, 1, 2, 2, 3, 3, 0, 0}));
  // Every token-choice is under exactly one label.
  int64_t sum = 0;
  for (const LabelLoad& l : s.labels) {
    for (int64_t c : l.expert_tokens) sum += c;
  }
  EXPECT_EQ(sum, s.tokens * 2 * 2);  // tokens x layers x top-k
}

// A client can send any number of distinct labels: past the bound they pool under "(other)",
// and a reset keeps only the labels of sequences still running.
TEST(LoadAggregatorTest, LabelsAreBounded) {
  Fixture f;
  const int n = LabelLoads::kMaxLabels + 6;
  for (int i = 0; i < n; ++i) f.agg->OnSequenceStart(100 + i, Info(absl::StrCat("l", i), 2, 1));
  f.agg->OnSequenceStart(1000, Info("l0", 2, 1));  // a known label stays itself when full
  LoadSnapshot s = f.agg->Snapshot();
  ASSERT_EQ(s.labels.size(), static_cast<size_t>(LabelLoads::kMaxLabels) + 1);
  EXPECT_EQ(s.labels[0].label, "l0");
  EXPECT_EQ(s.labels[0].requests, 2);
  EXPECT_EQ(s.labels.back().label, "(other)");
  EXPECT_EQ(s.labels.back().requests, 6);
  EXPECT_EQ(s.labels.back().prompt_tokens, 12);
  // A row of a sequence pooled under "(other)" counts there.
  f.Step({{100 + n - 1, 2, 1, false}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  EXPECT_EQ(f.agg->Snapshot().labels.back().generated_tokens, 1);

  for (int i = 0; i < n; ++i) {
    if (i != 5) f.agg->OnSequenceEnd(100 + i);
  }
  f.agg->Reset();
  s = f.agg->Snapshot();
  ASSERT_EQ(s.labels.size(), 2u);  // l0 (sequence 1000) and l5, in their old order, zeroed
  EXPECT_EQ(s.labels[0].label, "l0");
  EXPECT_EQ(s.labels[1].label, "l5");
  EXPECT_EQ(s.labels[1].requests, 0);
  f.Step({{105, 2, 1, false}}, {Choices({{0, 1}}), Choices({{0, 1}})});
  EXPECT_EQ(f.agg->Snapshot().labels[1].generated_tokens, 1);
}

// The counters /metrics exports go on across resets (and a re-placement's epoch): each epoch's
// figures added to those before it, while the snapshot's own start afresh.
TEST(LoadAggregatorTest, LifetimeCountersNeverGoDown) {
  Fixture f;
  f.agg->OnSequenceStart(1, Info("chat", 1, 8));
  f.Step({{1, 0, 1, true}}, {Choices({{0, 1}}), Choices({{2, 3}})});
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 1, 1, 2)).ok());
  f.agg->Reset();
  f.agg->OnSequenceStart(2, Info("chat", 2, 8));
  f.Step({{2, 0, 1, true}, {2, 1, 2, true}},
         {Choices({{0, 2}, {0, 3}}), Choices({{1, 0}, {1, 0}})});
  ASSERT_TRUE(f.agg->OnWorkerReport(Report(1, 2, 2, 3)).ok());
  const LoadSnapshot s = f.agg->Snapshot();
  EXPECT_EQ(s.layers[0].expert_tokens, (std::vector<int64_t>{2, 0, 1, 1}));  // since the reset
  const LoadCounters& total = s.lifetime;
  ASSERT_EQ(total.expert_tokens.size(), 2u);
  EXPECT_EQ(total.expert_tokens[0], (std::vector<int64_t>{3, 1, 1, 1}));
  EXPECT_EQ(total.expert_tokens[1], (std::vector<int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(total.exchanges, s.exchanges);  // no worker answered an exchange here
  ASSERT_EQ(total.workers.size(), 2u);
  EXPECT_EQ(total.workers[0].rank, 1);
  EXPECT_EQ(total.workers[0].reported_tokens, 2 + 3);  // epoch 1's report, then epoch 2's
  // Rank 1 hosts experts 0-1: epoch 1 sent it 1 + 1 choices (layers 0, 1), epoch 2 sent 2 + 4.
  EXPECT_EQ(total.workers[0].routed_tokens, 2 + 6);
  ASSERT_EQ(total.labels.size(), 1u);
  EXPECT_EQ(total.labels[0].label, "chat");
  EXPECT_EQ(total.labels[0].requests, 2);
  EXPECT_EQ(total.labels[0].prompt_tokens, 3);
  ASSERT_EQ(s.labels.size(), 1u);
  EXPECT_EQ(s.labels[0].requests, 1);
}

}  // namespace
}  // namespace moe
