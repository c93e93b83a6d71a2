#include "coordinator/inference/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moe {

KvCache::KvCache(kernels::Backend* backend, int n_layers, int64_t row_width)
    : row_width_(row_width) {
  for (int l = 0; l < n_layers; ++l) {
    keys_.emplace_back(backend);
    values_.emplace_back(backend);
  }
}

absl::Status KvCache::Reserve(int64_t n) {
  const int64_t need = length_ + n;
  if (need <= capacity_) return absl::OkStatus();
  const int64_t capacity = std::max<int64_t>(need, capacity_ * 2);  // amortised growth
  for (size_t l = 0; l < keys_.size(); ++l) {
    if (!keys_[l].Reserve(capacity * row_width_, /*keep=*/true) ||
        !values_[l].Reserve(capacity * row_width_, /*keep=*/true)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of memory growing a KV cache to ", capacity, " positions"));
    }
  }
  capacity_ = capacity;
  return absl::OkStatus();
}

int64_t KvCache::bytes() const {
  return 2 * static_cast<int64_t>(keys_.size()) * capacity_ * row_width_ *
         static_cast<int64_t>(sizeof(float));
}

}  // namespace moe
