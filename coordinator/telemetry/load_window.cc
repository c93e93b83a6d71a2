#include "coordinator/telemetry/load_window.h"

#include <algorithm>

namespace moe {
namespace {

void Zero(LoadWindow::Bucket* b, size_t expert_cells, size_t worker_cells) {
  b->expert_tokens.assign(expert_cells, 0);
  b->worker_tokens.assign(worker_cells, 0);
  b->steps = b->tokens = b->pairs = b->first_choice_repeats = b->set_overlaps = b->exchanges = 0;
  b->straggler_seconds = b->exchange_seconds = 0;
}

}  // namespace

LoadWindow::LoadWindow(double window_seconds, double start, size_t expert_cells,
                       size_t worker_cells)
    : bucket_seconds_(std::max(window_seconds, 1e-3) / kBuckets),
      start_(start),
      expert_cells_(expert_cells),
      worker_cells_(worker_cells) {
  Clear();
}

void LoadWindow::Clear() {
  buckets_.resize(kBuckets);
  for (Bucket& b : buckets_) Zero(&b, expert_cells_, worker_cells_);
  ids_.assign(kBuckets, -1);
}

int64_t LoadWindow::BucketNumber(double t) const {
  return static_cast<int64_t>((t - start_) / bucket_seconds_);
}

LoadWindow::Bucket* LoadWindow::At(double t) {
  const int64_t id = BucketNumber(t);
  const size_t slot = static_cast<size_t>(id % kBuckets);
  if (ids_[slot] != id) {
    Zero(&buckets_[slot], expert_cells_, worker_cells_);
    ids_[slot] = id;
  }
  return &buckets_[slot];
}

LoadWindow::Bucket LoadWindow::Sum(double now) const {
  const int64_t current = BucketNumber(now);
  Bucket sum;
  Zero(&sum, expert_cells_, worker_cells_);
  for (int i = 0; i < kBuckets; ++i) {
    if (ids_[i] < 0 || ids_[i] <= current - kBuckets) continue;  // empty, or slid out
    const Bucket& b = buckets_[i];
    for (size_t c = 0; c < expert_cells_; ++c) sum.expert_tokens[c] += b.expert_tokens[c];
    for (size_t c = 0; c < worker_cells_; ++c) sum.worker_tokens[c] += b.worker_tokens[c];
    sum.steps += b.steps;
    sum.tokens += b.tokens;
    sum.pairs += b.pairs;
    sum.first_choice_repeats += b.first_choice_repeats;
    sum.set_overlaps += b.set_overlaps;
    sum.straggler_seconds += b.straggler_seconds;
    sum.exchange_seconds += b.exchange_seconds;
    sum.exchanges += b.exchanges;
  }
  return sum;
}

}  // namespace moe
