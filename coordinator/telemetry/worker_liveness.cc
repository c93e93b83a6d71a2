#include "coordinator/telemetry/worker_liveness.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

std::function<double()> OrSteadyClock(std::function<double()> now) {
  if (now) return now;
  return [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
}

}  // namespace

WorkerLiveness::WorkerLiveness(int n_workers, double report_interval_seconds,
                               std::function<double()> now_seconds)
    : n_workers_(n_workers),
      // Three intervals, but not less than a second: a loaded host may delay a thread that long.
      stale_after_(std::max(3 * report_interval_seconds, 1.0)),
      now_seconds_(OrSteadyClock(std::move(now_seconds))),
      workers_(static_cast<size_t>(n_workers) + 1) {}

bool WorkerLiveness::AliveLocked(const Worker& w, double now) const {
  return w.received_at >= 0 && !w.stream_ended && now - w.received_at < stale_after_;
}

void WorkerLiveness::OnReport(int rank) {
  if (rank < 1 || rank > n_workers_) return;
  const double now = now_seconds_();
  absl::MutexLock lock(&mu_);
  workers_[rank].received_at = now;
  workers_[rank].stream_ended = false;
}

void WorkerLiveness::OnStreamEnded(int rank) {
  absl::MutexLock lock(&mu_);
  if (rank >= 1 && rank <= n_workers_) workers_[rank].stream_ended = true;
}

std::vector<int> WorkerLiveness::LostWorkers() const {
  const double now = now_seconds_();
  std::vector<int> lost;
  absl::MutexLock lock(&mu_);
  for (int r = 1; r <= n_workers_; ++r) {
    if (workers_[r].received_at >= 0 && !AliveLocked(workers_[r], now)) lost.push_back(r);
  }
  return lost;
}

absl::Status WorkerLiveness::CheckAlive(int rank) const {
  absl::MutexLock lock(&mu_);
  if (rank < 1 || rank > n_workers_) return absl::OkStatus();
  const Worker& w = workers_[rank];
  if (w.received_at >= 0 && w.stream_ended) {
    return absl::UnavailableError(absl::StrCat("worker rank ", rank,
                                               " is gone: its telemetry stream closed (the process "
                                               "or its host died, or the network to it failed)"));
  }
  return absl::OkStatus();
}

WorkerLiveness::State WorkerLiveness::state(int rank) const {
  const double now = now_seconds_();
  absl::MutexLock lock(&mu_);
  const Worker& w = workers_[rank];
  return State{w.received_at >= 0, AliveLocked(w, now),
               w.received_at >= 0 ? now - w.received_at : -1};
}

}  // namespace moe
