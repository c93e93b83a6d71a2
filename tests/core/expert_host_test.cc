// ExpertHost: each slot runs its logical expert's weights, and a layout that does not fit the
// model, the placement or the experts loaded here is refused before any math.
#include "core/exchange/expert_host.h"

#include <random>
#include <string>
#include <thread>

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

// Live re-placement on the host: new experts are staged on another thread while the host keeps
// serving the old ones, the switch makes them serve (with the same results as a host that loaded
// them at start-up), experts dropped by the new placement are freed, and a dropped stage leaves
// the host as it was.
TEST(ExpertHostTest, StagesNewExpertsInTheBackgroundAndSwitches) {
  LoadOptions first_half;
  first_half.attention_side = false;
  first_half.owns_expert = [](int, int e) { return e < 2; };
  auto w = LoadModelWeights(kModel, first_half);
  auto all = LoadModelWeights(kModel);
  ASSERT_TRUE(w.ok() && all.ok());
  const MixtralConfig& c = (*w)->config;
  const int E = c.num_local_experts, L = c.num_hidden_layers;
  const int64_t hidden = c.hidden_size;
  const ExpertPlacement placement = ExpertPlacement::InProcess(L, E);
  std::unique_ptr<kernels::Backend> backend = kernels::NewCpuBackend();
  auto made = ExpertHost::Create(w->get(), &placement, backend.get());
  auto reference = ExpertHost::Create(all->get(), &placement, backend.get());
  ASSERT_TRUE(made.ok() && reference.ok());
  ExpertHost& host = **made;
  EXPECT_EQ(host.LoadedCount(), 2 * L);

  // One row per expert of layer 1.
  ExpertLayout layout{1, hidden, {0}};
  for (int e = 0; e < E; ++e) layout.slot_offsets.push_back(e + 1);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> rows(static_cast<size_t>(E * hidden)), want(rows.size()), got(rows.size());
  for (float& x : rows) x = normal(rng);
  ASSERT_TRUE((*reference)->RunExperts(layout, rows.data(), want.data()).ok());
  // Rows for experts 0 and 1 only: what the host serves now.
  ExpertLayout old_layout{1, hidden, {0, 1, 2}};
  old_layout.slot_offsets.resize(static_cast<size_t>(E) + 1, 2);

  // Stage experts 2..E-1 (keeping 1, dropping 0) while serving goes on.
  LoadOptions second;
  second.attention_side = false;
  second.owns_expert = [](int, int e) { return e >= 2; };
  auto source = LoadModelWeights(kModel, second);
  ASSERT_TRUE(source.ok());
  absl::Status staged;
  std::thread loader([&] {
    kernels::UseCallingThreadOnly();
    staged = host.Stage(*std::move(source));
  });
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(host.RunExperts(old_layout, rows.data(), got.data()).ok());
  loader.join();
  ASSERT_TRUE(staged.ok()) << staged;
  EXPECT_EQ(host.LoadedCount(), 2 * L);  // staged experts do not serve before the switch
  EXPECT_EQ(host.RunExperts(layout, rows.data(), got.data()).code(), absl::StatusCode::kFailedPrecondition);

  host.Switch(&placement, [](int, int e) { return e >= 1; });
  EXPECT_EQ(host.LoadedCount(), (E - 1) * L);
  EXPECT_FALSE(host.Loaded(1, 0));
  ExpertLayout new_layout{1, hidden, {0, 0}};  // no row for the dropped expert 0
  for (int e = 1; e < E; ++e) new_layout.slot_offsets.push_back(e);
  std::vector<float> rows_new(rows.begin() + hidden, rows.end());
  ASSERT_TRUE(host.RunExperts(new_layout, rows_new.data(), got.data()).ok());
  for (int64_t i = 0; i < (E - 1) * hidden; ++i) ASSERT_EQ(got[i], want[hidden + i]) << i;

  // A stage dropped instead of switched changes nothing.
  auto again = LoadModelWeights(kModel, first_half);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(host.Stage(*std::move(again)).ok());
  host.DropStaged();
  host.Switch(&placement, [](int, int) { return true; });
  EXPECT_EQ(host.LoadedCount(), (E - 1) * L);
  EXPECT_FALSE(host.Loaded(0, 0));
}

}  // namespace
}  // namespace moe
