// The worker's checks of the exchange's control messages (core/exchange/step_messages.h), including
// the hostile values a fuzzer would try: negative or overflowing counts, wrong labels, huge tables.
#include "core/exchange/step_messages.h"

#include <climits>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

// 2 layers of 4 experts on 2 workers: rank 1 hosts slots 0-1, rank 2 slots 2-3.
ExpertPlacement Placement() { return *ExpertPlacement::Contiguous(2, 4, 2); }

StepHeader Forward(int64_t step, int layer, int64_t rows) {
  StepHeader h;
  h.magic = kStepMagic;
  h.command = static_cast<int32_t>(StepCommand::kForward);
  h.step_id = step;
  h.layer = layer;
  h.n_slots = 4;
  h.n_rows = rows;
  h.hidden = 8;
  return h;
}

TEST(StepMessagesTest, HeaderMagicAndOrder) {
  EXPECT_TRUE(CheckStepHeader(Forward(5, 0, 0), 4).ok());
  EXPECT_FALSE(CheckStepHeader(Forward(4, 0, 0), 4).ok()) << "a repeated step";
  StepHeader h = Forward(5, 0, 0);
  h.magic = 0;
  EXPECT_EQ(CheckStepHeader(h, 4).message(), "unexpected step header (magic 0, step 5 after 4)");
}

TEST(StepMessagesTest, ForwardHeaderMustFitTheModel) {
  const ExpertPlacement p = Placement();
  EXPECT_TRUE(CheckForwardHeader(Forward(1, 1, 3), p, 2, 8).ok());
  std::vector<StepHeader> bad(8, Forward(1, 0, 3));
  bad[0].command = static_cast<int32_t>(StepCommand::kShutdown);
  bad[1].layer = 2;
  bad[2].layer = -1;
  bad[3].n_slots = 5;
  bad[4].hidden = 16;
  bad[5].n_rows = -1;
  bad[6].n_rows = INT64_MAX;  // rows x hidden overflows int64 as well as an MPI message
  bad[7].n_rows = INT_MAX / 8 + 1;
  for (const StepHeader& h : bad) {
    const absl::Status s = CheckForwardHeader(h, p, 2, 8);
    EXPECT_TRUE(absl::IsInvalidArgument(s));
    EXPECT_NE(s.message().find("header does not fit this model"), std::string::npos) << s;
  }
}

TEST(StepMessagesTest, ForwardLayoutFromCountsAndIds) {
  const ExpertPlacement p = Placement();
  // Rank 1: 2 rows for slot 0, 1 for slot 1.
  absl::StatusOr<ExpertLayout> ok = ForwardLayout(
      Forward(1, 0, 3), std::vector<int64_t>{2, 1, 0, 0}, std::vector<int32_t>{0, 0, 1}, p, 1);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->slot_offsets, (std::vector<int64_t>{0, 2, 3, 3, 3}));
  EXPECT_EQ(ok->layer, 0);
  // Rows for a slot rank 2 hosts.
  EXPECT_TRUE(
      absl::IsFailedPrecondition(ForwardLayout(Forward(1, 0, 1), std::vector<int64_t>{0, 0, 1, 0},
                                               std::vector<int32_t>{2}, p, 1)
                                     .status()));
  // A row labelled with another slot.
  EXPECT_EQ(ForwardLayout(Forward(1, 0, 2), std::vector<int64_t>{2, 0, 0, 0},
                          std::vector<int32_t>{0, 1}, p, 1)
                .status()
                .message(),
            "step 1 row 1 is labelled slot 1, expected 0");
  // Counts that do not add up, negative ones, and ones whose sum would overflow.
  EXPECT_FALSE(ForwardLayout(Forward(1, 0, 2), std::vector<int64_t>{1, 0, 0, 0},
                             std::vector<int32_t>{0, 0}, p, 1)
                   .ok());
  EXPECT_FALSE(ForwardLayout(Forward(1, 0, 1), std::vector<int64_t>{2, -1, 0, 0},
                             std::vector<int32_t>{0}, p, 1)
                   .ok());
  EXPECT_FALSE(ForwardLayout(Forward(1, 0, 1), std::vector<int64_t>{INT64_MAX, INT64_MAX, 2, 0},
                             std::vector<int32_t>{0}, p, 1)
                   .ok());
  // Messages of the wrong length.
  EXPECT_FALSE(
      ForwardLayout(Forward(1, 0, 1), std::vector<int64_t>{1, 0, 0}, std::vector<int32_t>{0}, p, 1)
          .ok());
  EXPECT_FALSE(ForwardLayout(Forward(1, 0, 1), std::vector<int64_t>{1, 0, 0, 0},
                             std::vector<int32_t>{}, p, 1)
                   .ok());
}

TEST(StepMessagesTest, SlotTableRoundTripAndHostileTables) {
  const ExpertPlacement p =
      *ExpertPlacement::FromJson(R"({"experts": [[1, 2], 1, 2, [2, 1]]})", 2, 4, 2);
  const std::vector<int32_t> table = EncodeSlotTable(p);
  absl::StatusOr<ExpertPlacement> back = DecodeSlotTable(table, 2, 4, 2);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(EncodeSlotTable(*back), table);
  for (size_t cut = 0; cut < table.size(); ++cut) {
    EXPECT_FALSE(DecodeSlotTable(absl::MakeSpan(table).subspan(0, cut), 2, 4, 2).ok())
        << "cut at " << cut;
  }
  std::vector<int32_t> longer = table;
  longer.push_back(0);
  EXPECT_EQ(DecodeSlotTable(longer, 2, 4, 2).status().message(),
            "slot table longer than its counts");
  EXPECT_FALSE(DecodeSlotTable(std::vector<int32_t>{2, INT32_MAX}, 2, 4, 2).ok())
      << "a huge count allocates nothing";
  EXPECT_FALSE(DecodeSlotTable(std::vector<int32_t>{2, -1}, 2, 4, 2).ok());
  EXPECT_FALSE(DecodeSlotTable(std::vector<int32_t>{3}, 2, 4, 2).ok());
  std::vector<int32_t> stranger = table;
  stranger[2] = 7;  // a rank outside 1..2
  EXPECT_FALSE(DecodeSlotTable(stranger, 2, 4, 2).ok());
}

}  // namespace
}  // namespace moe
