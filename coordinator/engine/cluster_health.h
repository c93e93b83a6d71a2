// ClusterHealth: whether the cluster can serve, as /health and the gRPC health service say it.
// A watcher thread, off the engine thread, follows the workers' heartbeats: while one is lost, new
// requests fail at once naming it (instead of waiting --worker-timeout-s for a step that cannot
// finish) and health says NOT_SERVING; both return when it reports again. Being off the engine
// thread, it sees a worker that hangs inside a step within the heartbeat bound all the same.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "coordinator/inference/scheduler.h"
#include "core/exchange/peer_liveness.h"

namespace moe {

class ClusterHealth {
 public:
  // heartbeats: not owned; null means none to watch (healthy until SetDown). scheduler: not
  // owned; its admission stops and resumes with the workers.
  ClusterHealth(const WorkerHeartbeats* heartbeats, Scheduler* scheduler);
  ~ClusterHealth();
  ClusterHealth(const ClusterHealth&) = delete;
  ClusterHealth& operator=(const ClusterHealth&) = delete;

  // Called with the new serving state whenever it changes (the gRPC health service). Set it
  // before StartWatching.
  void OnServingChange(std::function<void(bool serving)> callback) {
    on_serving_ = std::move(callback);
  }
  // Checks the heartbeats every 50 ms on a thread of its own until StopWatching.
  void StartWatching();
  void StopWatching();

  // OK while the cluster can serve; else why not. Thread-safe.
  absl::Status status() const;
  // Serving has ended (`why`: shutting down, the cluster failed): status() says so from now on,
  // and workers that report again no longer resume admission.
  void SetDown(absl::Status why);
  // After StopWatching: checks once more. Unavailable, naming the ranks, when a lost worker is
  // known dead (its report stream closed: nothing can finish); OK when every lost worker may
  // still answer.
  absl::Status CheckKnownDead();

 private:
  void Check();
  void SetStatus(absl::Status status);
  bool down() const;

  const WorkerHeartbeats* heartbeats_;
  Scheduler* scheduler_;
  std::function<void(bool)> on_serving_;
  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  // The watcher's alone while it runs (Check is called by it, or after it was joined).
  std::vector<int> lost_;
  std::string lost_reason_;  // why, one clause per lost rank
  bool lost_gone_ = false;   // one of them is known dead, not just silent
  absl::Notification stop_;
  std::thread watcher_;
};

}  // namespace moe
