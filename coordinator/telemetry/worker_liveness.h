// WorkerLiveness: what the coordinator knows of its workers' lives, from their report streams.
// A worker that reported is alive while its reports keep coming (within three report intervals,
// at least a second) on an open stream; lost once it goes silent or its stream ends; known gone
// (PeerLiveness, what the exchange's waits ask) only once its stream ended without a new report:
// silence alone may be a busy or stopped worker, left to the step's timeout. A worker that has not
// reported yet is starting, neither lost nor gone.
//
// Fed by the load aggregator (a report it accepted) and the report service (a stream that ended);
// read by the exchange, the cluster's health and the telemetry snapshot. Thread-safe.
#pragma once

#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/exchange/peer_liveness.h"

namespace moe {

class WorkerLiveness : public WorkerHeartbeats {
 public:
  // Workers are ranks 1..n_workers. now_seconds: a monotonic clock (default steady_clock; tests
  // fake it).
  WorkerLiveness(int n_workers, double report_interval_seconds,
                 std::function<double()> now_seconds = {});

  // A report from `rank` was accepted (its stream is open).
  void OnReport(int rank);
  // `rank`'s report stream ended (its process or host is gone, or the stream broke): lost at once,
  // not three intervals later, until its next report.
  void OnStreamEnded(int rank);

  std::vector<int> LostWorkers() const override;
  absl::Status CheckAlive(int rank) const override;

  struct State {
    bool reported = false;             // at least once
    bool alive = false;                // reported within the bound, stream open
    double seconds_since_report = -1;  // -1: never reported
  };
  State state(int rank) const;  // REQUIRES: 1 <= rank <= n_workers

 private:
  struct Worker {
    double received_at = -1;  // when its last report came; -1: none yet
    bool stream_ended = false;
  };
  bool AliveLocked(const Worker& w, double now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int n_workers_;
  const double stale_after_;  // seconds of silence after which a worker is lost
  const std::function<double()> now_seconds_;
  mutable absl::Mutex mu_;
  std::vector<Worker> workers_ ABSL_GUARDED_BY(mu_);  // [n_workers + 1] by rank
};

}  // namespace moe
