// Fuzz target: a placement JSON file (ExpertPlacement::FromJson), for a model shape taken from the
// first bytes. An accepted placement must keep its invariants: every slot on a worker rank and a
// real expert, every expert of every layer in a slot, every worker with a slot in some layer, and
// no worker over the slot budget in any layer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/placement/expert_placement.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int n_layers = 1 + data[0] % 4, n_experts = 1 + data[1] % 16, n_workers = 1 + data[2] % 8;
  const int budget = data[3] % 6;  // 0: no --expert-slots
  const std::string json(reinterpret_cast<const char*>(data + 4), size - 4);
  auto p = moe::ExpertPlacement::FromJson(json, n_layers, n_experts, n_workers, budget);
  if (!p.ok()) return 0;
  const int limit = budget > 0 ? budget : p->expert_slots();
  std::vector<int> hosted(static_cast<size_t>(n_workers) + 1, 0);  // over all layers
  for (int l = 0; l < p->n_layers(); ++l) {
    std::vector<int> experts(static_cast<size_t>(n_experts), 0),
        workers(static_cast<size_t>(n_workers) + 1, 0);
    for (const moe::ExpertSlot& s : p->slots(l)) {
      if (s.rank < 1 || s.rank > n_workers || s.expert < 0 || s.expert >= n_experts) std::abort();
      ++experts[s.expert];
      ++workers[s.rank];
      ++hosted[s.rank];
    }
    for (int e = 0; e < n_experts; ++e) {
      if (experts[e] == 0) std::abort();
    }
    for (int w = 1; w <= n_workers; ++w) {
      if (limit > 0 && workers[w] > limit) std::abort();
    }
  }
  // A worker may sit out a layer (it then gets no rows there), but not the whole model.
  for (int w = 1; w <= n_workers; ++w) {
    if (hosted[w] == 0) std::abort();
  }
  p->Describe();
  return 0;
}
