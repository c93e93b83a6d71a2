#include "coordinator/inference/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace moe {

TokenLogprob RowLogprob(const float* logits, int64_t vocab, int32_t id, int top_n) {
  TokenLogprob out;
  out.id = id;
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] > max) max = logits[i];  // NaN never compares greater
  }
  if (!std::isfinite(max)) {
    out.logprob = std::numeric_limits<float>::quiet_NaN();
    return out;
  }
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(logits[i])) sum += std::exp(static_cast<double>(logits[i]) - max);
  }
  const double log_z = max + std::log(sum);
  auto logprob = [&](int64_t i) {
    return static_cast<float>(static_cast<double>(logits[i]) - log_z);
  };
  out.logprob = id >= 0 && id < vocab ? logprob(id) : std::numeric_limits<float>::quiet_NaN();
  const int64_t n = std::min<int64_t>(std::max(top_n, 0), vocab);
  if (n == 0) return out;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto key = [logits](int32_t i) {
    return std::isnan(logits[i]) ? -std::numeric_limits<float>::infinity() : logits[i];
  };
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return key(a) > key(b) || (key(a) == key(b) && a < b);
  });
  for (int64_t k = 0; k < n; ++k) out.top.emplace_back(order[k], logprob(order[k]));
  return out;
}

}  // namespace moe
