#include "coordinator/moe_routing.h"

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
  // Expert 1's choices all go to its first replica (slot 1) until a load rule spreads them.
  EXPECT_EQ(plan.slot_of_choice, (std::vector<int32_t>{1, 2, 1, 0, 2, 1}));
  EXPECT_EQ(plan.layout.slot_offsets, (std::vector<int64_t>{0, 1, 4, 6, 6}));
  EXPECT_EQ(plan.source_token, (std::vector<int64_t>{1, 0, 1, 2, 0, 2}));
  ExpectConsistent(r, plan, *p, 1);
  EXPECT_TRUE(ValidateLayout(plan.layout, *p).ok());
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
