// KvCache: the keys and values of one sequence, every layer, every position so far.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace moe {

// Positions are stored contiguously per layer ([capacity, n_kv_heads * head_dim]) in the memory of
// the backend that runs attention (the GPU's for CUDA); a sliding window masks old positions at
// attention time rather than evicting them.
// Not thread-safe: owned by one sequence, touched by the step loop only. Movable, not copyable.
class KvCache {
 public:
  KvCache(kernels::Backend* backend, int n_layers, int64_t row_width);

  int64_t length() const { return length_; }  // positions committed
  int64_t row_width() const { return row_width_; }
  // Makes room for n more positions beyond length() in every layer; fails when memory runs out.
  absl::Status Reserve(int64_t n);
  float* keys(int layer) { return keys_[layer].data(); }      // [capacity, row_width]
  float* values(int layer) { return values_[layer].data(); }  // [capacity, row_width]
  // Commits n positions written (in every layer) after length().
  void Advance(int64_t n) { length_ += n; }
  int64_t bytes() const;

 private:
  int64_t row_width_;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
  std::vector<kernels::BackendArray<float>> keys_;
  std::vector<kernels::BackendArray<float>> values_;
};

}  // namespace moe
