#include "coordinator/kv_cache.h"

#include <algorithm>

namespace moe {

void KvCache::Reserve(int64_t n) {
  const int64_t need = length_ + n;
  if (need <= capacity_) return;
  capacity_ = std::max<int64_t>(need, capacity_ * 2);  // amortised growth while decoding
  for (auto& k : keys_) k.resize(static_cast<size_t>(capacity_ * row_width_));
  for (auto& v : values_) v.resize(static_cast<size_t>(capacity_ * row_width_));
}

int64_t KvCache::bytes() const {
  return 2 * static_cast<int64_t>(keys_.size()) * capacity_ * row_width_ *
         static_cast<int64_t>(sizeof(float));
}

}  // namespace moe
