// LoadRecorder: a worker's load counters, fed by the serving loop after every step and read by the
// telemetry reporter thread (which turns its reports into protobuf). Counters restart when a step
// arrives with a new telemetry epoch (ResetLoad on the coordinator), so resets fall on the same
// step boundary everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/exchange/load_telemetry.h"
#include "core/placement/expert_placement.h"

namespace moe {

class LoadRecorder : public WorkerStepObserver {
 public:
  // placement: not owned; the (layer, expert) pairs this rank hosts are the ones reported.
  LoadRecorder(int rank, std::string host, const ExpertPlacement* placement);

  // Serving loop: a few additions under a short lock; never blocks on I/O.
  void OnWorkerStep(const WorkerStepRecord& record) override;
  // Serving loop, after a live re-placement: reports list the new (layer, expert) pairs, from
  // zero. Reports until the next step still carry the old telemetry epoch, which the coordinator
  // counts for liveness only (it starts a new epoch with every re-placement).
  void OnPlacementChanged(const ExpertPlacement& placement, uint32_t epoch) override;

  // Reporter thread: the counters so far, as the next report (sequence numbers increase).
  WorkerReport NextReport();

 private:
  void ZeroLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IndexLocked(const ExpertPlacement& placement) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int rank_;
  const std::string host_;
  const int n_experts_;

  absl::Mutex mu_;
  std::vector<std::pair<int, int>> hosted_ ABSL_GUARDED_BY(mu_);  // (layer, expert), report order
  std::vector<int> slot_ ABSL_GUARDED_BY(mu_);  // [layer * E + expert] -> index in hosted_, or -1
  uint32_t epoch_ ABSL_GUARDED_BY(mu_) = 1;  // the coordinator starts at epoch 1
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t placement_epoch_ ABSL_GUARDED_BY(mu_) = 1;
  WorkerReport totals_ ABSL_GUARDED_BY(mu_);  // experts: one entry per hosted_ pair
};

}  // namespace moe
