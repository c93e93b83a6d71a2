#include "coordinator/moe_routing.h"

#include <cmath>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(RouteTopKTest, SoftmaxTopKRenormalise) {
  // Token 0 prefers experts 2 then 0; token 1 prefers 3 then 1.
  const float logits[] = {1.0f, 0.0f, 2.0f, -1.0f, /**/ 0.0f, 0.5f, 0.1f, 3.0f};
  const Routing r = RouteTopK(logits, 2, 4, 2);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{2, 0, 3, 1}));
  // Renormalised top-2 of a softmax is the softmax of the two logits.
  const float w0 = 1.0f / (1.0f + std::exp(-1.0f));
  EXPECT_NEAR(r.weight[0], w0, 1e-6);
  EXPECT_NEAR(r.weight[1], 1 - w0, 1e-6);
  EXPECT_NEAR(r.weight[2] + r.weight[3], 1.0f, 1e-6);
}

TEST(RouteTopKTest, TopOneWeighsOne) {
  const float logits[] = {0.3f, 0.9f, 0.1f};
  const Routing r = RouteTopK(logits, 1, 3, 1);
  EXPECT_EQ(r.expert[0], 1);
  EXPECT_FLOAT_EQ(r.weight[0], 1.0f);
}

TEST(ExpertBatchTest, GroupsRowsByExpertAndCombinesBack) {
  const int64_t n = 3, hidden = 2;
  Routing r;
  r.top_k = 2;
  r.expert = {1, 0, /**/ 1, 2, /**/ 0, 1};
  r.weight = {0.75f, 0.25f, 0.5f, 0.5f, 0.9f, 0.1f};
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};
  ExpertBatch batch;
  std::vector<int64_t> slot;
  BuildExpertBatch(r, x.data(), n, hidden, 3, /*layer=*/4, &batch, &slot);
  EXPECT_EQ(batch.layer, 4);
  EXPECT_EQ(batch.expert_offsets, (std::vector<int64_t>{0, 2, 5, 6}));
  // Expert 0 gets tokens 0 and 2, expert 1 tokens 0, 1, 2, expert 2 token 1, each in token order.
  EXPECT_EQ(batch.rows, (std::vector<float>{1, 2, 5, 6, 1, 2, 3, 4, 5, 6, 3, 4}));
  // Fake experts: expert e multiplies by (e + 1).
  std::vector<float> out(batch.rows.size());
  for (int e = 0; e < 3; ++e)
    for (int64_t row = batch.expert_offsets[e]; row < batch.expert_offsets[e + 1]; ++row)
      for (int c = 0; c < hidden; ++c) out[row * hidden + c] = batch.rows[row * hidden + c] * (e + 1);
  std::vector<float> residual(6, 10.0f);
  CombineExpertOutputs(r, slot, out.data(), n, hidden, residual.data());
  // token 0: 0.75 * 2x + 0.25 * 1x = 1.75x; token 1: 0.5 * 2x + 0.5 * 3x = 2.5x; token 2: 0.9x + 0.2x.
  const std::vector<float> want = {10 + 1.75f, 10 + 3.5f, 10 + 7.5f, 10 + 10.0f, 10 + 5.5f, 10 + 6.6f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(residual[i], want[i], 1e-5) << i;
}

}  // namespace
}  // namespace moe
