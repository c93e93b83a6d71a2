// Placement as physical slots, and the layout checks both sides of the exchange make.
#include "core/expert_placement.h"

#include <string>

#include "core/expert_layout.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

bool Mentions(const absl::Status& s, const std::string& text) {
  return std::string(s.message()).find(text) != std::string::npos;
}

TEST(ExpertPlacementTest, TodaysFormatsGiveOneSlotPerExpert) {
  auto p = ExpertPlacement::FromJson(R"({"layers": [[1, 2, 2, 1], [2, 1, 1, 2]]})", 2, 4, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(p->n_slots(l), 4);
    for (int e = 0; e < 4; ++e) {
      EXPECT_EQ(p->slots(l)[e].expert, e);
      EXPECT_EQ(p->slots(l)[e].rank, p->table()[l][e]);
      EXPECT_EQ(p->replicas(l, e), std::vector<int>{e});
    }
  }
  EXPECT_EQ(p->owner(1, 0), 2);
  EXPECT_TRUE(p->Owns(1, 1, 2));
  EXPECT_FALSE(p->Owns(2, 1, 2));
  EXPECT_EQ(p->CountOwned(1), 4);
  auto c = ExpertPlacement::Contiguous(3, 8, 3);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->table()[2], (std::vector<int>{1, 1, 1, 2, 2, 2, 3, 3}));
  EXPECT_EQ(c->n_slots(2), 8);
}

TEST(ExpertPlacementTest, SlotsAreValidated) {
  // Expert 2 of layer 0 is in no slot.
  auto missing = ExpertPlacement::FromSlots({{{1, 0}, {2, 1}, {2, 1}}}, 3, 2);
  EXPECT_TRUE(Mentions(missing.status(), "layer 0 expert 2 is in no slot")) << missing.status();
  auto rank = ExpertPlacement::FromSlots({{{1, 0}, {3, 1}}}, 2, 2);
  EXPECT_TRUE(Mentions(rank.status(), "assigned to rank 3, outside the worker ranks 1..2"))
      << rank.status();
  auto expert = ExpertPlacement::FromSlots({{{1, 0}, {2, 1}, {2, 5}}}, 2, 2);
  EXPECT_TRUE(Mentions(expert.status(), "slot 2 holds expert 5 of 2")) << expert.status();
  auto idle = ExpertPlacement::FromSlots({{{1, 0}, {1, 1}}}, 2, 2);
  EXPECT_TRUE(Mentions(idle.status(), "worker rank 2 hosts no expert")) << idle.status();
  auto replicated = ExpertPlacement::FromSlots({{{1, 0}, {2, 1}, {2, 0}}}, 2, 2);
  ASSERT_TRUE(replicated.ok()) << replicated.status();
  EXPECT_EQ(replicated->replicas(0, 0), (std::vector<int>{0, 2}));
}

TEST(ExpertLayoutTest, ValidateLayoutNamesWhatIsWrong) {
  auto p = ExpertPlacement::FromSlots({{{1, 0}, {2, 1}, {2, 0}}, {{1, 0}, {2, 1}}}, 2, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  ExpertLayout layout{0, 8, {0, 2, 2, 5}};
  EXPECT_TRUE(ValidateLayout(layout, *p).ok());
  layout.layer = 1;  // layer 1 has 2 slots
  EXPECT_TRUE(Mentions(ValidateLayout(layout, *p), "names 3 slots; layer 1 has 2"));
  layout.layer = 2;
  EXPECT_TRUE(Mentions(ValidateLayout(layout, *p), "layer 2 of a 2-layer placement"));
  layout = ExpertLayout{0, 8, {1, 2, 2, 5}};
  EXPECT_TRUE(Mentions(ValidateLayout(layout, *p), "do not start at 0"));
  layout = ExpertLayout{0, 8, {0, 3, 2, 5}};
  EXPECT_TRUE(Mentions(ValidateLayout(layout, *p), "decrease at slot 1"));
  EXPECT_EQ(ValidateLayout(layout, *p).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExpertLayoutTest, AWorkerTakesOnlyItsOwnSlots) {
  auto p = ExpertPlacement::FromSlots({{{1, 0}, {2, 1}, {2, 0}}}, 2, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  const ExpertLayout to_rank_2{0, 8, {0, 0, 2, 5}};  // slots 1 and 2: both rank 2's
  EXPECT_TRUE(CheckSlotsHostedBy(2, to_rank_2, *p).ok());
  const absl::Status s = CheckSlotsHostedBy(1, to_rank_2, *p);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Mentions(s, "2 rows for layer 0 slot 1 (expert 1), which rank 2 hosts, not rank 1"))
      << s;
  const ExpertLayout empty{0, 8, {0, 0, 0, 0}};
  EXPECT_TRUE(CheckSlotsHostedBy(1, empty, *p).ok());
}

}  // namespace
}  // namespace moe
