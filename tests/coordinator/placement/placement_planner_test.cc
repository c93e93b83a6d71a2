#include "coordinator/placement/placement_planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/placement/expert_placement.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

PlannerOptions Options(int workers, int slots, bool improve = true) {
  PlannerOptions o;
  o.n_workers = workers;
  o.slots_per_worker = slots;
  o.improve = improve;
  return o;
}

// Slots from per-worker expert lists: hosted[w] = experts on rank w + 1.
std::vector<ExpertSlot> FromWorkers(const std::vector<std::vector<int>>& hosted) {
  std::vector<ExpertSlot> slots;
  for (size_t w = 0; w < hosted.size(); ++w) {
    for (int e : hosted[w]) slots.push_back({static_cast<int>(w) + 1, e});
  }
  return slots;
}

std::vector<std::vector<ExpertSlot>> SlotsOf(const PlacementPlan& plan) {
  std::vector<std::vector<ExpertSlot>> out;
  for (const LayerPlan& l : plan.layers) out.push_back(l.slots);
  return out;
}

// The constraints every plan meets, and its reported loads against an independent evaluation.
void ExpectValid(const PlacementPlan& plan, const std::vector<std::vector<double>>& loads,
                 int workers, int slots) {
  ASSERT_EQ(plan.layers.size(), loads.size());
  const int experts = static_cast<int>(loads[0].size());
  for (size_t l = 0; l < loads.size(); ++l) {
    const LayerPlan& p = plan.layers[l];
    std::vector<int> per_worker(workers, 0), replicas(experts, 0);
    std::vector<std::vector<int>> held(workers, std::vector<int>(experts, 0));
    for (const ExpertSlot& s : p.slots) {
      ASSERT_GE(s.rank, 1);
      ASSERT_LE(s.rank, workers);
      ASSERT_GE(s.expert, 0);
      ASSERT_LT(s.expert, experts);
      ++per_worker[s.rank - 1];
      ++replicas[s.expert];
      EXPECT_EQ(++held[s.rank - 1][s.expert], 1)
          << "layer " << l << ": rank " << s.rank << " holds expert " << s.expert << " twice";
    }
    for (int w = 0; w < workers; ++w) {
      EXPECT_LE(per_worker[w], slots) << "layer " << l << " rank " << w + 1;
      EXPECT_GE(per_worker[w], 1) << "layer " << l << " rank " << w + 1;
    }
    for (int e = 0; e < experts; ++e) EXPECT_GE(replicas[e], 1) << "layer " << l << " expert " << e;
    // Slots in expert order, so the file's numbering (expert order, then listed) is the plan's.
    EXPECT_TRUE(std::is_sorted(
        p.slots.begin(), p.slots.end(),
        [](const ExpertSlot& a, const ExpertSlot& b) { return a.expert < b.expert; }));
    double total = 0.0, max = 0.0;
    for (int w = 0; w < workers; ++w) {
      double sum = 0.0;
      for (const ExpertSlot& s : p.slots) {
        if (s.rank == w + 1) sum += loads[l][s.expert] / replicas[s.expert];
      }
      EXPECT_NEAR(p.worker_load[w], sum, 1e-9 * (1 + sum));
      total += sum;
      max = std::max(max, sum);
    }
    EXPECT_NEAR(p.max, max, 1e-9 * (1 + max));
    EXPECT_NEAR(p.mean, total / workers, 1e-9 * (1 + total));
  }
  // The plan also loads as the runtime's placement.
  EXPECT_TRUE(ExpertPlacement::FromSlots(SlotsOf(plan), experts, workers).ok());
}

TEST(PlacementPlannerTest, ReplicatesTheHotExpert) {
  // 4 experts on 2 workers, 3 slots each: expert 0 (8 of 11) on both workers, 4 + 4, then the
  // three cold ones and the spare replica of expert 1 make 5.5 + 5.5, the total / 2: optimal.
  const std::vector<std::vector<double>> loads = {{8, 1, 1, 1}};
  for (bool improve : {false, true}) {
    auto plan = PlanPlacement(loads, Options(2, 3, improve));
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectValid(*plan, loads, 2, 3);
    const LayerPlan& p = plan->layers[0];
    EXPECT_DOUBLE_EQ(p.max, 5.5) << improve;
    EXPECT_DOUBLE_EQ(p.balancedness, 1.0);
    EXPECT_EQ(p.replicas, 2);
    EXPECT_EQ(p.slots[0].expert, 0);
    EXPECT_EQ(p.slots[1].expert, 0);  // on both ranks
  }
  // Without a spare slot each worker holds two experts: the best is 8 + 1 | 1 + 1.
  auto tight = PlanPlacement(loads, Options(2, 2));
  ASSERT_TRUE(tight.ok());
  ExpectValid(*tight, loads, 2, 2);
  EXPECT_DOUBLE_EQ(tight->layers[0].max, 9.0);
  EXPECT_EQ(tight->layers[0].replicas, 0);
}

TEST(PlacementPlannerTest, LocalSearchFixesTheGreedyPacking) {
  // Loads 3,3,2,2,2,0 on 2 workers x 3 slots: the greedy packs 3+2+2 | 3+2+0 (7 | 5); the optimum
  // is 3+3+0 | 2+2+2 (6 | 6), one swap away.
  const std::vector<std::vector<double>> loads = {{3, 3, 2, 2, 2, 0}};
  auto baseline = PlanPlacement(loads, Options(2, 3, /*improve=*/false));
  auto plan = PlanPlacement(loads, Options(2, 3));
  ASSERT_TRUE(baseline.ok() && plan.ok());
  ExpectValid(*baseline, loads, 2, 3);
  ExpectValid(*plan, loads, 2, 3);
  EXPECT_DOUBLE_EQ(baseline->layers[0].max, 7.0);
  EXPECT_DOUBLE_EQ(plan->layers[0].max, 6.0);
  EXPECT_DOUBLE_EQ(plan->balancedness, 1.0);
}

TEST(PlacementPlannerTest, UniformLoadsBalancePerfectly) {
  const std::vector<std::vector<double>> loads(3, std::vector<double>(8, 10.0));
  auto plan = PlanPlacement(loads, Options(4, 2));  // ceil(8 / 4): no room for replicas
  ASSERT_TRUE(plan.ok());
  ExpectValid(*plan, loads, 4, 2);
  for (const LayerPlan& l : plan->layers) {
    EXPECT_EQ(l.replicas, 0);
    EXPECT_EQ(l.worker_load, std::vector<double>(4, 20.0));
  }
  EXPECT_DOUBLE_EQ(plan->balancedness, 1.0);
  auto roomy = PlanPlacement(loads, Options(4, 3));
  ASSERT_TRUE(roomy.ok());
  ExpectValid(*roomy, loads, 4, 3);
  EXPECT_DOUBLE_EQ(roomy->balancedness, 1.0);
}

TEST(PlacementPlannerTest, AnOptimalCurrentPlacementStays) {
  const std::vector<std::vector<double>> loads = {{3, 3, 2, 2, 2, 0}};
  // The optimum, and the same with the two workers' names exchanged.
  for (const auto& hosted : {std::vector<std::vector<int>>{{0, 1, 5}, {2, 3, 4}},
                             std::vector<std::vector<int>>{{2, 3, 4}, {0, 1, 5}}}) {
    for (int slots : {3, 4}) {
      auto plan = PlanPlacement(loads, Options(2, slots), {FromWorkers(hosted)});
      ASSERT_TRUE(plan.ok()) << plan.status();
      ExpectValid(*plan, loads, 2, slots);
      EXPECT_EQ(plan->moved_slots, 0) << slots;
      EXPECT_EQ(plan->moved_experts, 0) << slots;
      EXPECT_DOUBLE_EQ(plan->layers[0].max, 6.0);
    }
  }
  // Uniform loads with spare slots: replicas would not lower the max, so none are added.
  const std::vector<std::vector<double>> uniform = {std::vector<double>(8, 10.0)};
  auto same =
      PlanPlacement(uniform, Options(4, 3), {FromWorkers({{0, 1}, {2, 3}, {4, 5}, {6, 7}})});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->moved_slots, 0);
  EXPECT_EQ(same->layers[0].replicas, 0);
}

TEST(PlacementPlannerTest, CountsMovesAndKeepsNearTies) {
  const std::vector<std::vector<double>> loads = {{3, 3, 2, 2, 2, 0}};
  const std::vector<ExpertSlot> contiguous = FromWorkers({{0, 1, 2}, {3, 4, 5}});  // 8 | 4
  auto plan = PlanPlacement(loads, Options(2, 3), {contiguous});
  ASSERT_TRUE(plan.ok());
  EXPECT_DOUBLE_EQ(plan->layers[0].max, 6.0);
  // From {0,1,2 | 3,4,5} to {0,1,5 | 2,3,4} (or a mirror): the fewest moves is one swap.
  EXPECT_EQ(plan->moved_slots, 2);
  EXPECT_EQ(plan->moved_experts, 2);
  // Within 50% of the best (6 * 1.5 = 9 >= 8) nothing needs to move.
  PlannerOptions lenient = Options(2, 3);
  lenient.keep_within = 0.5;
  auto kept = PlanPlacement(loads, lenient, {contiguous});
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->moved_slots, 0);
  EXPECT_DOUBLE_EQ(kept->layers[0].max, 8.0);
  // EvaluatePlacement counts the same moves.
  auto eval = EvaluatePlacement(loads, SlotsOf(*plan), 2, {contiguous});
  ASSERT_TRUE(eval.ok());
  EXPECT_EQ(eval->moved_slots, 2);
  EXPECT_DOUBLE_EQ(eval->layers[0].max, 6.0);
}

TEST(PlacementPlannerTest, RefusesBadInput) {
  const std::vector<std::vector<double>> loads = {{1, 2, 3, 4}};
  EXPECT_FALSE(PlanPlacement(loads, Options(2, 1)).ok());  // 2 slots for 4 experts
  EXPECT_FALSE(PlanPlacement(loads, Options(5, 1)).ok());  // a worker would host nothing
  EXPECT_FALSE(PlanPlacement(loads, Options(0, 4)).ok());
  EXPECT_FALSE(PlanPlacement({{1, -2, 3, 4}}, Options(2, 2)).ok());
  EXPECT_FALSE(PlanPlacement({{1, NAN, 3, 4}}, Options(2, 2)).ok());
  EXPECT_FALSE(PlanPlacement({{1, 2, 3, 4}, {1, 2}}, Options(2, 2)).ok());
  EXPECT_FALSE(PlanPlacement({}, Options(2, 2)).ok());
  PlannerOptions negative = Options(2, 2);
  negative.keep_within = -1;
  EXPECT_FALSE(PlanPlacement(loads, negative).ok());
  EXPECT_FALSE(
      PlanPlacement(loads, Options(2, 2), {FromWorkers({{0, 1}, {2}})}).ok());  // expert 3?
  EXPECT_FALSE(
      PlanPlacement(loads, Options(2, 2), {FromWorkers({{0, 1}, {2, 3}, {0}})}).ok());  // rank 3
  EXPECT_FALSE(
      PlanPlacement(loads, Options(2, 2), {FromWorkers({{0, 1, 1}, {2, 3}})}).ok());  // twice
  EXPECT_FALSE(
      PlanPlacement(loads, Options(2, 2), {FromWorkers({{0, 1}, {2, 3}}), {}}).ok());  // 2 layers
  const auto status = PlanPlacement(loads, Options(2, 1)).status();
  EXPECT_NE(status.message().find("expert slots"), std::string::npos) << status;
}

// Random skewed loads at awkward sizes: every constraint holds, the plan is never worse than the
// baseline, re-planning from the plan moves nothing, and a current placement never makes it worse.
TEST(PlacementPlannerTest, RandomLoadsProperties) {
  std::mt19937 rng(20261214);
  double baseline_sum = 0.0, plan_sum = 0.0, contiguous_sum = 0.0;
  int cases = 0, strictly_better = 0;
  for (int experts : {1, 3, 8, 17, 64}) {
    for (int workers : {1, 2, 3, 5, 8}) {
      if (workers > experts) continue;
      const int min_slots = (experts + workers - 1) / workers;
      for (int slots : {min_slots, min_slots + 1, min_slots + 3}) {
        std::vector<std::vector<double>> loads(3, std::vector<double>(experts));
        std::uniform_real_distribution<double> u(0.0, 1.0);
        for (auto& row : loads) {
          for (double& x : row) x = std::floor(1000 * std::pow(u(rng), 3));  // skewed, some zero
        }
        auto baseline = PlanPlacement(loads, Options(workers, slots, false));
        auto plan = PlanPlacement(loads, Options(workers, slots));
        ASSERT_TRUE(baseline.ok() && plan.ok()) << plan.status();
        SCOPED_TRACE(testing::Message()
                     << experts << " experts, " << workers << " workers, " << slots << " slots");
        ExpectValid(*baseline, loads, workers, slots);
        ExpectValid(*plan, loads, workers, slots);
        for (size_t l = 0; l < loads.size(); ++l) {
          EXPECT_LE(plan->layers[l].max, baseline->layers[l].max * (1 + 1e-9)) << "layer " << l;
        }
        auto again = PlanPlacement(loads, Options(workers, slots), SlotsOf(*plan));
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(again->moved_slots, 0);
        EXPECT_NEAR(again->balancedness, plan->balancedness, 1e-9);

        auto contiguous = ExpertPlacement::Contiguous(3, experts, workers);
        ASSERT_TRUE(contiguous.ok());
        std::vector<std::vector<ExpertSlot>> now;
        for (int l = 0; l < 3; ++l) now.push_back(contiguous->slots(l));
        auto from_now = PlanPlacement(loads, Options(workers, slots), now);
        auto before = EvaluatePlacement(loads, now, workers);
        ASSERT_TRUE(from_now.ok() && before.ok());
        ExpectValid(*from_now, loads, workers, slots);
        for (size_t l = 0; l < loads.size(); ++l) {
          EXPECT_LE(from_now->layers[l].max, plan->layers[l].max * (1 + 1e-9)) << "layer " << l;
          EXPECT_LE(from_now->layers[l].max, before->layers[l].max * (1 + 1e-9)) << "layer " << l;
        }
        baseline_sum += baseline->balancedness;
        plan_sum += plan->balancedness;
        contiguous_sum += before->balancedness;
        strictly_better += plan->balancedness > baseline->balancedness + 1e-9;
        ++cases;
      }
    }
  }
  std::printf(
      "%d random cases: mean balancedness contiguous %.4f, EPLB baseline %.4f, planner %.4f; "
      "planner better than the baseline in %d\n",
      cases, contiguous_sum / cases, baseline_sum / cases, plan_sum / cases, strictly_better);
  EXPECT_GT(strictly_better, 0);
}

}  // namespace
}  // namespace moe
