// Fuzz target: the control messages a worker receives (core/exchange/step_messages.h): a step
// header, then a forward step's counts and slot ids, or a placement command's slot table, checked
// as ServeExperts checks them. An accepted layout must describe exactly the rows it was sent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/exchange/step_messages.h"

namespace {

// 3 layers of 4 experts on 2 workers, expert 0 replicated on both.
const moe::ExpertPlacement& Placement() {
  static const moe::ExpertPlacement* p = new moe::ExpertPlacement(
      *moe::ExpertPlacement::FromJson(R"({"experts": [[1, 2], 1, 2, 2]})", 3, 4, 2));
  return *p;
}

template <typename T>
std::vector<T> Take(const uint8_t*& data, size_t& size, int64_t n) {
  std::vector<T> out;
  if (n <= 0 || n > 1 << 20) return out;
  const size_t want = static_cast<size_t>(n) * sizeof(T);
  if (want > size) return out;  // not enough bytes for the message: a short read
  out.resize(static_cast<size_t>(n));
  std::memcpy(out.data(), data, want);
  data += want;
  size -= want;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moe::StepHeader h;
  if (size < sizeof(h) + 1) return 0;
  const int rank = 1 + data[0] % 2;
  std::memcpy(&h, data + 1, sizeof(h));
  data += sizeof(h) + 1;
  size -= sizeof(h) + 1;
  const moe::ExpertPlacement& placement = Placement();
  if (!moe::CheckStepHeader(h, 0).ok()) return 0;
  if (h.command == static_cast<int32_t>(moe::StepCommand::kBeginPlacement)) {
    const std::vector<int32_t> table = Take<int32_t>(data, size, h.n_rows);
    auto next = moe::DecodeSlotTable(table, placement.n_layers(), placement.n_experts(),
                                     placement.n_workers());
    if (next.ok() && moe::EncodeSlotTable(*next) != table) std::abort();  // accepted means faithful
    return 0;
  }
  if (!moe::CheckForwardHeader(h, placement, /*n_layers=*/3, /*hidden=*/16).ok()) return 0;
  const std::vector<int64_t> counts = Take<int64_t>(data, size, h.n_slots);
  const std::vector<int32_t> ids = Take<int32_t>(data, size, h.n_rows);
  auto layout = moe::ForwardLayout(h, counts, ids, placement, rank);
  if (!layout.ok()) return 0;
  if (layout->n_rows() != h.n_rows || layout->n_slots() != placement.n_slots(h.layer)) std::abort();
  for (int s = 0; s < layout->n_slots(); ++s) {
    if (layout->rows_of(s) < 0 ||
        (layout->rows_of(s) > 0 && placement.slots(h.layer)[s].rank != rank))
      std::abort();
  }
  return 0;
}
