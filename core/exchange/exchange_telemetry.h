// What the exchange tells telemetry, on both sides of it. Observers are called on the step loop's
// thread right after each exchange, so they must be cheap: count and return (the reporting, the
// aggregation and every I/O happen on other threads).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/placement/expert_placement.h"

namespace moe {

// What the coordinator's exchanges cost, summed since the last Reset() (the benchmark's figures).
struct ExchangeStats {
  int64_t exchanges = 0;
  double wall_seconds = 0;             // coordinator: from first send to last output received
  double slowest_compute_seconds = 0;  // sum over exchanges of the slowest worker's expert time
  std::vector<double> worker_compute_seconds;  // [W + 1], by rank
  std::vector<int64_t> worker_rows;            // [W + 1], by rank
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;

  // Zeroes every sum; keeps the number of ranks.
  void Reset() {
    exchanges = 0;
    wall_seconds = slowest_compute_seconds = 0;
    worker_compute_seconds.assign(worker_compute_seconds.size(), 0.0);
    worker_rows.assign(worker_rows.size(), 0);
    bytes_sent = bytes_received = 0;
  }
};

// Coordinator side: one exchange (one layer of one step) as the coordinator saw it.
struct ExchangeRecord {
  int layer = 0;
  double wall_seconds = 0;                          // first send to last output received
  absl::Span<const double> worker_compute_seconds;  // [W + 1] by rank (0 unused): each reply's
  absl::Span<const int64_t> worker_rows;            // [W + 1] rows sent to each rank
};

class ExchangeObserver {
 public:
  virtual ~ExchangeObserver() = default;
  virtual void OnExchange(const ExchangeRecord& record) = 0;
};

// Several observers behind the exchange's one (the load telemetry and a routing trace), told in
// the order added. Not thread-safe: add every observer before the first exchange; none is owned.
class ExchangeObservers : public ExchangeObserver {
 public:
  void Add(ExchangeObserver* observer) { observers_.push_back(observer); }
  void OnExchange(const ExchangeRecord& record) override {
    for (ExchangeObserver* observer : observers_) observer->OnExchange(record);
  }

 private:
  std::vector<ExchangeObserver*> observers_;
};

// Worker side: one step this worker answered.
struct WorkerStepRecord {
  uint32_t epoch = 0;  // telemetry epoch from the step header
  int64_t step_id = 0;
  int layer = 0;
  absl::Span<const int64_t> expert_rows;    // [E] rows per expert (0 for experts not hosted)
  absl::Span<const double> expert_seconds;  // [E] time per expert; empty if the runner can't say
  double compute_seconds = 0;               // running the experts
  double wait_seconds = 0;                  // receiving the dispatch and sending the outputs
  double idle_seconds = 0;                  // waiting for this step's header
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
};

class WorkerStepObserver {
 public:
  virtual ~WorkerStepObserver() = default;
  virtual void OnWorkerStep(const WorkerStepRecord& record) = 0;
  // A live re-placement made `placement` (of placement epoch `epoch`) this worker's, between two
  // steps.
  virtual void OnPlacementChanged(const ExpertPlacement& placement, uint32_t epoch) {
    (void)placement;
    (void)epoch;
  }
};

}  // namespace moe
