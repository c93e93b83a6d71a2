// LoadWindow: the load aggregator's sliding window (--load-window-s) as a ring of 60 buckets of
// window / 60 seconds, each holding what the steps and exchanges that fell in it counted. The
// window moves a bucket at a time, so it covers between 59/60 of the window and the whole of it.
//
// Not thread-safe: the aggregator's mutex guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moe {

class LoadWindow {
 public:
  struct Bucket {
    std::vector<int64_t> expert_tokens;  // [layers * E] token-choices
    std::vector<int64_t> worker_tokens;  // [layers * (W + 1)] rows per rank (0 unused)
    int64_t steps = 0;
    int64_t tokens = 0;
    int64_t pairs = 0, first_choice_repeats = 0, set_overlaps = 0;  // locality, all layers
    double straggler_seconds = 0;
    double exchange_seconds = 0;
    int64_t exchanges = 0;
  };

  // start: the clock's value at the aggregator's start (bucket numbers count from it).
  LoadWindow(double window_seconds, double start, size_t expert_cells, size_t worker_cells);

  // The bucket for time t, emptied first if it last held an older one.
  Bucket* At(double t);
  // Every bucket still in the window at `now`, summed.
  Bucket Sum(double now) const;
  // Forgets everything (a reset).
  void Clear();

  static constexpr int kBuckets = 60;

 private:
  int64_t BucketNumber(double t) const;

  const double bucket_seconds_;
  const double start_;
  const size_t expert_cells_, worker_cells_;
  std::vector<Bucket> buckets_;  // [kBuckets]
  std::vector<int64_t> ids_;     // [kBuckets] the bucket number each holds, -1: none
};

}  // namespace moe
