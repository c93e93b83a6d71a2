#include "coordinator/inference/moe_routing.h"

#include "core/base/status_macros.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// Three tokens, top-2 over three experts.
Routing ThreeTokens() {
  Routing r;
  r.top_k = 2;
  r.expert = {1, 0, /**/ 1, 2, /**/ 0, 1};
  r.weight = {0.75f, 0.25f, 0.5f, 0.5f, 0.9f, 0.1f};
  return r;
}

// Three tokens, top-2 over four experts.
Routing ThreeTokensOnFourExperts() {
  Routing r;
  r.top_k = 2;
  r.expert = {3, 0, /**/ 1, 2, /**/ 0, 3};
  r.weight.assign(6, 0.5f);
  return r;
}

// Every choice's row holds its token, and the rows of a slot are the slot's choices.
void ExpectConsistent(const Routing& r, const DispatchPlan& plan, const ExpertPlacement& p,
                      int layer) {
  for (size_t i = 0; i < r.expert.size(); ++i) {
    const int64_t row = plan.row_of_choice[i];
    const int slot = plan.slot_of_choice[i];
    EXPECT_EQ(plan.source_token[row], static_cast<int64_t>(i) / r.top_k) << i;
    EXPECT_GE(row, plan.layout.slot_offsets[slot]) << i;
    EXPECT_LT(row, plan.layout.slot_offsets[slot + 1]) << i;
    EXPECT_EQ(p.slots(layer)[slot].expert, r.expert[i]) << i;
  }
}

TEST(PlanDispatchTest, OneSlotPerExpertGroupsByExpertInTokenOrder) {
  const Routing r = ThreeTokens();
  const ExpertPlacement p = ExpertPlacement::InProcess(/*n_layers=*/5, /*n_experts=*/3);
  DispatchPlan plan;
  PlanDispatch(r, 3, p, /*layer=*/4, /*hidden=*/2, &plan);
  EXPECT_EQ(plan.layout.layer, 4);
  EXPECT_EQ(plan.layout.hidden, 2);
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>{0, 2, 5, 6}));
  EXPECT_EQ(plan.slot_of_choice, (std::vector<int32_t>{1, 0, 1, 2, 0, 1}));
  // Expert 0 gets tokens 0 and 2, expert 1 tokens 0, 1, 2, expert 2 token 1, each in token order.
  EXPECT_EQ(plan.source_token, (std::vector<int64_t>{0, 2, 0, 1, 2, 1}));
  EXPECT_EQ(plan.row_of_choice, (std::vector<int64_t>{2, 0, 3, 5, 1, 4}));
  ExpectConsistent(r, plan, p, 4);
}

TEST(PlanDispatchTest, PlansToThePlacementsSlots) {
  // Layer 1 numbers its slots unlike its experts and holds expert 1 twice: slot 0 = expert 2 on
  // rank 2, slot 1 = expert 1 on rank 1, slot 2 = expert 0 on rank 1, slot 3 = expert 1 on rank 2.
  auto p = ExpertPlacement::FromSlots({{{1, 0}, {1, 1}, {2, 2}}, {{2, 2}, {1, 1}, {1, 0}, {2, 1}}},
                                      /*n_experts=*/3, /*n_workers=*/2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->replicas(1, 1), (std::vector<int>{1, 3}));
  EXPECT_EQ(p->owner(1, 1), 1);
  EXPECT_TRUE(p->Owns(2, 1, 1));
  const Routing r = ThreeTokens();
  DispatchPlan plan;
  PlanDispatch(r, 3, *p, /*layer=*/1, /*hidden=*/2, &plan);
  // Experts 0 and 2 first: expert 0 (choices 1, 4) to slot 2 on rank 1, expert 2 (choice 3) to
  // slot 0 on rank 2; loads 2 and 1. Then expert 1's choices 0, 2, 5: to rank 2 (1 < 2: slot 3),
  // a tie at 2 (the lowest slot, 1), rank 2 again (2 < 3).
  EXPECT_EQ(plan.slot_of_choice, (std::vector<int32_t>{3, 2, 1, 0, 2, 3}));
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>{0, 1, 2, 4, 6}));
  EXPECT_EQ(plan.source_token, (std::vector<int64_t>{1, 1, 0, 2, 0, 2}));
  EXPECT_EQ(plan.rank_load, (std::vector<int64_t>{0, 3, 3}));
  ExpectConsistent(r, plan, *p, 1);
  EXPECT_TRUE(ValidateLayout(plan.layout, *p).ok());
}

// The file {"experts": [[1, 2], 1, 2, [2, 1]]}: slot 0 = expert 0 on rank 1, 1 = expert 0 on
// rank 2, 2 = expert 1 on rank 1, 3 = expert 2 on rank 2, 4 = expert 3 on rank 2, 5 = expert 3 on
// rank 1.
ExpertPlacement TwoReplicatedExperts() {
  auto p = ExpertPlacement::FromJson(R"({"experts": [[1, 2], 1, 2, [2, 1]]})", 1, 4, 2);
  MOE_CHECK(p.ok());
  return *std::move(p);
}

TEST(PlanDispatchTest, SplitRuleGivesEachReplicatedChoiceToTheLeastLoadedRank) {
  const ExpertPlacement p = TwoReplicatedExperts();
  Routing r;
  r.top_k = 2;
  r.expert = {0, 1, /**/ 3, 0, /**/ 0, 2, /**/ 1, 3, /**/ 0, 3};  // choices 0..9
  r.weight.assign(10, 0.5f);
  DispatchPlan plan;
  PlanDispatch(r, 5, p, 0, 4, &plan);
  // Unreplicated first: expert 1 (choices 1, 6) to slot 2, rank 1 at 2; expert 2 (choice 5) to
  // slot 3, rank 2 at 1. Expert 0 (choices 0, 3, 4, 8; slots 0 on rank 1, 1 on rank 2): 1 < 2 to
  // slot 1; tie 2-2 to slot 0; 2 < 3 to slot 1; tie 3-3 to slot 0. Loads now 4 and 3. Expert 3
  // (choices 2, 7, 9; slots 4 on rank 2, 5 on rank 1): 3 < 4 to slot 4; tie 4-4 to the lowest
  // slot, 4 (rank 2 although it is listed second for expert 0); 4 < 5 to slot 5.
  EXPECT_EQ(plan.slot_of_choice, (std::vector<int32_t>{1, 2, 4, 0, 1, 3, 2, 4, 0, 5}));
  EXPECT_EQ(plan.rank_load, (std::vector<int64_t>{0, 5, 5}));
  // Rows grouped by slot, each slot's in token order.
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>{0, 2, 4, 6, 7, 9, 10}));
  EXPECT_EQ(plan.source_token, (std::vector<int64_t>{1, 4, 0, 2, 0, 3, 2, 1, 3, 4}));
  EXPECT_EQ(plan.row_of_choice, (std::vector<int64_t>{2, 4, 7, 0, 3, 6, 5, 8, 1, 9}));
  ExpectConsistent(r, plan, p, 0);
  EXPECT_TRUE(ValidateLayout(plan.layout, p).ok());
}

TEST(PlanDispatchTest, SplitRuleTiesGoToTheLowestSlotAmongSeveralReplicas) {
  // Expert 2 on ranks 3, 2, 1 (slots 2, 3, 4), the others unreplicated.
  auto p = ExpertPlacement::FromJson(R"({"experts": [1, 2, [3, 2, 1]]})", 1, 3, 3);
  ASSERT_TRUE(p.ok()) << p.status();
  Routing r;
  r.top_k = 1;
  r.expert = {0, 0, 0, 2, 1, 2, 2, 2, 2, 2};
  r.weight.assign(10, 1.0f);
  DispatchPlan plan;
  PlanDispatch(r, 10, *p, 0, 4, &plan);
  // Loads after experts 0 and 1: rank 1 3, rank 2 1, rank 3 0. Expert 2, tokens 3, 5, ..., 9:
  // rank 3 (0); tie 1-1 to slot 2 (rank 3); rank 2 (1 < 2); tie 2-2 to slot 2; rank 2; a three-way
  // tie 3-3-3 to slot 2.
  EXPECT_EQ(plan.slot_of_choice, (std::vector<int32_t>{0, 0, 0, 2, 1, 2, 3, 2, 3, 2}));
  EXPECT_EQ(plan.rank_load, (std::vector<int64_t>{0, 3, 3, 4}));
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>{0, 3, 4, 8, 10, 10}));
  ExpectConsistent(r, plan, *p, 0);
}

TEST(PlanDispatchTest, SplitRuleIsDeterministicAndReusesThePlan) {
  const ExpertPlacement p = TwoReplicatedExperts();
  Routing big;
  big.top_k = 2;
  for (int t = 0; t < 17; ++t) {  // two distinct experts per token, every expert often
    const int first = t % 4, second = (3 * t + 1) % 4;
    big.expert.insert(big.expert.end(), {first, second != first ? second : (t + 1) % 4});
  }
  big.weight.assign(big.expert.size(), 0.5f);
  DispatchPlan a, b;
  PlanDispatch(big, 17, p, 0, 8, &a);
  ExpectConsistent(big, a, p, 0);
  const int32_t* slots = a.slot_of_choice.data();
  const int64_t* rows = a.row_of_choice.data();
  // Something else in between, then the same routing again: the same plan, in the same memory.
  PlanDispatch(ThreeTokensOnFourExperts(), 3, p, 0, 8, &a);
  PlanDispatch(big, 17, p, 0, 8, &a);
  PlanDispatch(big, 17, p, 0, 8, &b);
  EXPECT_EQ(a.slot_of_choice, b.slot_of_choice);
  EXPECT_EQ(a.row_of_choice, b.row_of_choice);
  EXPECT_EQ(a.source_token, b.source_token);
  EXPECT_EQ(a.layout.slot_offsets, b.layout.slot_offsets);
  EXPECT_EQ(a.slot_of_choice.data(), slots);
  EXPECT_EQ(a.row_of_choice.data(), rows);
  // 34 choices, 17 on each rank (worked out by replaying the rule by hand in Python).
  EXPECT_EQ(a.rank_load, (std::vector<int64_t>{0, 17, 17}));
}

TEST(PlanDispatchTest, NoTokensPlansAnEmptyLayout) {
  Routing r;
  r.top_k = 2;
  const ExpertPlacement p = ExpertPlacement::InProcess(2, 4);
  DispatchPlan plan;
  PlanDispatch(r, 0, p, 0, 8, &plan);
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>(5, 0)));
  EXPECT_EQ(plan.layout.n_rows(), 0);
}

}  // namespace
}  // namespace moe
