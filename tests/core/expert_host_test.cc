// ExpertHost: each slot runs its logical expert's weights, and a layout that does not fit the
// model, the placement or the experts loaded here is refused before any math.
#include "core/expert_host.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

const std::string kModel = std::string(MOE_SOURCE_DIR) + "/tests/golden/swa_gqa4";

TEST(ExpertHostTest, RefusesSlotsItDoesNotHost) {
  LoadOptions opt;
  opt.attention_side = false;
  opt.owns_expert = [](int, int e) { return e == 0; };
  auto w = LoadModelWeights(kModel, opt);
  ASSERT_TRUE(w.ok()) << w.status();
  const MixtralConfig& c = (*w)->config;
  const ExpertPlacement placement =
      ExpertPlacement::InProcess(c.num_hidden_layers, c.num_local_experts);
  std::unique_ptr<kernels::Backend> backend = kernels::NewCpuBackend();
  auto made = ExpertHost::Create(w->get(), &placement, backend.get());
  ASSERT_TRUE(made.ok()) << made.status();
  ExpertHost& host = **made;
  ExpertLayout layout;
  layout.layer = 1;
  layout.hidden = c.hidden_size;
  layout.slot_offsets.assign(c.num_local_experts + 1, 2);
  layout.slot_offsets[0] = 0;
  layout.slot_offsets[1] = 1;  // one row for slot 0 (expert 0), one for slot 1 (expert 1)
  std::vector<float> rows(2 * c.hidden_size, 0.5f), out(rows.size());
  const absl::Status s = host.RunExperts(layout, rows.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("layer 1 slot 1 (expert 1) is not hosted here"),
            std::string::npos)
      << s;
  layout.layer = 7;
  EXPECT_EQ(host.RunExperts(layout, rows.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  layout.layer = 0;
  layout.slot_offsets.pop_back();  // one slot short
  EXPECT_EQ(host.RunExperts(layout, rows.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  layout.slot_offsets.assign(c.num_local_experts + 1, 1);
  layout.slot_offsets[0] = 0;  // one row, expert 0: hosted
  layout.hidden = c.hidden_size + 1;
  EXPECT_EQ(host.RunExperts(layout, rows.data(), out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  layout.hidden = c.hidden_size;
  EXPECT_TRUE(host.RunExperts(layout, rows.data(), out.data()).ok());
}

TEST(ExpertHostTest, EachSlotRunsItsExpertsWeights) {
  auto w = LoadModelWeights(kModel);
  ASSERT_TRUE(w.ok()) << w.status();
  const MixtralConfig& c = (*w)->config;
  const int n_experts = c.num_local_experts;
  const int64_t hidden = c.hidden_size;
  // Slot s holds expert E-1-s, and expert 3 has a second slot at the end.
  std::vector<ExpertSlot> reversed;
  for (int s = 0; s < n_experts; ++s) reversed.push_back({1, n_experts - 1 - s});
  reversed.push_back({1, 3});
  auto placed = ExpertPlacement::FromSlots(
      std::vector<std::vector<ExpertSlot>>(static_cast<size_t>(c.num_hidden_layers), reversed),
      n_experts, 1);
  ASSERT_TRUE(placed.ok()) << placed.status();
  const ExpertPlacement identity = ExpertPlacement::InProcess(c.num_hidden_layers, n_experts);
  std::unique_ptr<kernels::Backend> backend = kernels::NewCpuBackend();
  auto by_expert = ExpertHost::Create(w->get(), &identity, backend.get());
  auto by_slot = ExpertHost::Create(w->get(), &*placed, backend.get());
  ASSERT_TRUE(by_expert.ok() && by_slot.ok());

  // Awkward row counts per expert, random rows.
  std::vector<int64_t> rows_of(static_cast<size_t>(n_experts));
  for (int e = 0; e < n_experts; ++e) rows_of[e] = (e * 5 + 1) % 4 + (e == 2 ? 17 : 0);
  ExpertLayout expert_layout{1, hidden, {0}};
  for (int e = 0; e < n_experts; ++e)
    expert_layout.slot_offsets.push_back(expert_layout.n_rows() + rows_of[e]);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> rows(static_cast<size_t>(expert_layout.n_rows() * hidden));
  for (float& x : rows) x = normal(rng);
  std::vector<float> want(rows.size());
  ASSERT_TRUE((*by_expert)->RunExperts(expert_layout, rows.data(), want.data()).ok());

  // The same rows grouped by slot: expert e's rows go to slot E-1-e, the extra slot gets none.
  ExpertLayout slot_layout{1, hidden, {0}};
  std::vector<float> slot_rows;
  for (int s = 0; s < n_experts; ++s) {
    const int e = n_experts - 1 - s;
    slot_layout.slot_offsets.push_back(slot_layout.n_rows() + rows_of[e]);
    slot_rows.insert(slot_rows.end(), rows.begin() + expert_layout.slot_offsets[e] * hidden,
                     rows.begin() + expert_layout.slot_offsets[e + 1] * hidden);
  }
  slot_layout.slot_offsets.push_back(slot_layout.n_rows());
  std::vector<float> got(rows.size());
  ASSERT_TRUE((*by_slot)->RunExperts(slot_layout, slot_rows.data(), got.data()).ok());
  for (int s = 0; s < n_experts; ++s) {
    const int e = n_experts - 1 - s;
    for (int64_t i = 0; i < rows_of[e] * hidden; ++i) {
      ASSERT_EQ(got[slot_layout.slot_offsets[s] * hidden + i],
                want[expert_layout.slot_offsets[e] * hidden + i])
          << "slot " << s << " expert " << e << " element " << i;
    }
  }
  ASSERT_NE((*by_slot)->LastSlotSeconds(), nullptr);
}

}  // namespace
}  // namespace moe
