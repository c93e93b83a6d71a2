// Test helper: a layer's Routing from hand-written top-2 choices, {first, second} per row, with
// weights 0.6 and 0.4.
#pragma once

#include <cstdint>
#include <vector>

#include "coordinator/inference/moe_routing.h"

namespace moe::testing {

inline Routing Choices(const std::vector<std::vector<int32_t>>& rows) {
  Routing r;
  r.top_k = 2;
  for (const auto& row : rows) {
    r.expert.insert(r.expert.end(), row.begin(), row.end());
    r.weight.insert(r.weight.end(), {0.6f, 0.4f});
  }
  return r;
}

}  // namespace moe::testing
