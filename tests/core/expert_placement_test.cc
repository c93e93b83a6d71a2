// Placement as physical slots, and the layout checks both sides of the exchange make.
#include "core/placement/expert_placement.h"

#include <string>

#include "core/placement/expert_layout.h"
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

TEST(ExpertPlacementTest, JsonListsGiveReplicasNumberedInExpertThenListedOrder) {
  auto p = ExpertPlacement::FromJson(R"({"experts": [[1, 2], 1, 2, [2, 1]]})", 2, 4, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(p->n_slots(l), 6);
    const std::vector<std::pair<int, int>> want = {{1, 0}, {2, 0}, {1, 1}, {2, 2}, {2, 3}, {1, 3}};
    for (int s = 0; s < 6; ++s) {
      EXPECT_EQ(p->slots(l)[s].rank, want[s].first) << s;
      EXPECT_EQ(p->slots(l)[s].expert, want[s].second) << s;
    }
    EXPECT_EQ(p->replicas(l, 0), (std::vector<int>{0, 1}));
    EXPECT_EQ(p->replicas(l, 1), std::vector<int>{2});
    EXPECT_EQ(p->replicas(l, 3), (std::vector<int>{4, 5}));
    EXPECT_EQ(p->CountSlots(1, l), 3);
    EXPECT_EQ(p->CountSlots(2, l), 3);
  }
  EXPECT_EQ(p->owner(0, 3), 2);  // the first listed replica
  EXPECT_EQ(p->table()[1], (std::vector<int>{1, 1, 2, 2}));
  EXPECT_TRUE(p->Owns(1, 0, 3));
  EXPECT_TRUE(p->Owns(2, 0, 0));
  EXPECT_FALSE(p->Owns(1, 0, 2));
  EXPECT_EQ(p->CountOwned(1), 6);
  EXPECT_EQ(p->Describe(),
            "  worker rank 1: experts 0,1,3 of every layer\n"
            "  worker rank 2: experts 0,2,3 of every layer\n"
            "  replicated experts (on ranks): 0 on 1+2, 3 on 2+1\n");

  // Per layer, uneven: layer 0 replicates expert 1, layer 1 expert 0 on all three ranks.
  auto per_layer =
      ExpertPlacement::FromJson(R"({"layers": [[1, [3, 2], 3], [[2, 1, 3], 1, 2]]})", 2, 3, 3);
  ASSERT_TRUE(per_layer.ok()) << per_layer.status();
  EXPECT_EQ(per_layer->n_slots(0), 4);
  EXPECT_EQ(per_layer->replicas(0, 1), (std::vector<int>{1, 2}));
  EXPECT_EQ(per_layer->slots(0)[2].rank, 2);
  EXPECT_EQ(per_layer->n_slots(1), 5);
  EXPECT_EQ(per_layer->replicas(1, 0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(per_layer->replicas(1, 2), std::vector<int>{4});
  EXPECT_EQ(per_layer->CountSlots(1, 1), 2);
  EXPECT_EQ(per_layer->CountSlots(3, 0), 2);
  EXPECT_EQ(per_layer->Describe(),
            "  layer 0: expert->rank 1 3+2 3\n"
            "  layer 1: expert->rank 2+1+3 1 2\n");
  // Without replicas the start-up log reads as before.
  auto plain = ExpertPlacement::FromJson(R"({"layers": [[1, 2, 2, 1], [2, 1, 1, 2]]})", 2, 4, 2);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->Describe(),
            "  layer 0: expert->rank 1 2 2 1\n  layer 1: expert->rank 2 1 1 2\n");
}

TEST(ExpertPlacementTest, BadReplicaListsNameLayerAndExpert) {
  auto parse = [](const std::string& json) {
    return ExpertPlacement::FromJson(json, 2, 4, 2).status();
  };
  absl::Status s = parse(R"({"experts": [1, [], 2, 2]})");
  EXPECT_TRUE(Mentions(s, "placement: layer 0 expert 1 has an empty list of worker ranks")) << s;
  s = parse(R"({"layers": [[1, 2, 2, 1], [1, [2, 2], 1, 2]]})");
  EXPECT_TRUE(Mentions(s, "placement: layer 1 expert 1 lists worker rank 2 twice")) << s;
  // Ranks beyond int must not wrap onto a real rank (4294967297 = 2^32 + 1 wrapped to 1).
  s = parse(R"({"experts": [4294967297, 2, 2, 1]})");
  EXPECT_TRUE(Mentions(s, "layer 0 expert 0 names worker rank 4294967297, outside 1..2")) << s;
  s = parse(R"({"experts": [1, [2, 18446744073709551615], 2, 1]})");
  EXPECT_TRUE(Mentions(s, "layer 0 expert 1 names worker rank 18446744073709551615")) << s;
  s = parse(R"({"experts": [-4294967295, 2, 2, 1]})");
  EXPECT_TRUE(Mentions(s, "names worker rank -4294967295")) << s;
  s = parse(R"({"experts": [1, [2, "x"], 2, 2]})");
  EXPECT_TRUE(Mentions(s, "layer 0 expert 1 lists \"x\", not a worker rank")) << s;
  s = parse(R"({"experts": [1, [2, 3], 2, 2]})");
  EXPECT_TRUE(Mentions(s, "layer 0 expert 1 is assigned to rank 3, outside the worker ranks 1..2"))
      << s;
  s = parse(R"({"experts": [1, [1, 2], 1, null]})");
  EXPECT_TRUE(Mentions(s, "layer 0 expert 3 is unowned")) << s;
  s = parse(R"({"experts": [[1], [1], 1, 1]})");
  EXPECT_TRUE(Mentions(s, "worker rank 2 hosts no expert")) << s;
}

TEST(ExpertPlacementTest, SlotBudgetFromTheFlagOrTheFile) {
  const std::string json = R"({"layers": [[[1, 2], 1, 2, 2], [[1, 2], 1, [2, 1], [1, 2]]]})";
  // Layer 0: rank 1 hosts 2 slots, rank 2 hosts 3; layer 1: 4 and 3.
  EXPECT_TRUE(ExpertPlacement::FromJson(json, 2, 4, 2).ok());
  EXPECT_TRUE(ExpertPlacement::FromJson(json, 2, 4, 2, /*expert_slots=*/4).ok());
  absl::Status s = ExpertPlacement::FromJson(json, 2, 4, 2, 3).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(s, "worker rank 1 hosts 4 expert slots of layer 1, over the budget of 3"))
      << s;
  s = ExpertPlacement::FromJson(json, 2, 4, 2, 2).status();
  EXPECT_TRUE(Mentions(s, "worker rank 2 hosts 3 expert slots of layer 0, over the budget of 2"))
      << s;
  // The file's budget applies without the flag, and must agree with it when both are given.
  const std::string with_budget = R"({"expert_slots": 3, )" + json.substr(1);
  s = ExpertPlacement::FromJson(with_budget, 2, 4, 2).status();
  EXPECT_TRUE(Mentions(s, "worker rank 1 hosts 4 expert slots of layer 1, over the budget of 3"))
      << s;
  s = ExpertPlacement::FromJson(with_budget, 2, 4, 2, 4).status();
  EXPECT_TRUE(Mentions(s, "\"expert_slots\": 3 disagrees with --expert-slots 4")) << s;
  const std::string roomy = R"({"expert_slots": 4, )" + json.substr(1);
  EXPECT_TRUE(ExpertPlacement::FromJson(roomy, 2, 4, 2).ok());
  EXPECT_TRUE(ExpertPlacement::FromJson(roomy, 2, 4, 2, 4).ok());
  s = ExpertPlacement::FromJson(R"({"expert_slots": -1, "experts": [1, 2, 1, 2]})", 2, 4, 2)
          .status();
  EXPECT_TRUE(Mentions(s, "\"expert_slots\" must be a count of slots >= 0, got -1")) << s;
  // The contiguous default is checked the same way.
  auto c = ExpertPlacement::Contiguous(2, 8, 3);  // 3, 3, 2 experts
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->CheckSlotBudget(3).ok());
  EXPECT_TRUE(c->CheckSlotBudget(0).ok());
  EXPECT_TRUE(Mentions(c->CheckSlotBudget(2), "worker rank 1 hosts 3 expert slots of layer 0"));
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
