#include "coordinator/engine/cluster_health.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace moe {

ClusterHealth::ClusterHealth(const WorkerHeartbeats* heartbeats, Scheduler* scheduler)
    : heartbeats_(heartbeats), scheduler_(scheduler) {}

ClusterHealth::~ClusterHealth() { StopWatching(); }

void ClusterHealth::StartWatching() {
  if (heartbeats_ == nullptr || watcher_.joinable()) return;
  watcher_ = std::thread([this] {
    do {
      Check();
    } while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  });
}

void ClusterHealth::StopWatching() {
  if (!watcher_.joinable()) return;
  stop_.Notify();
  watcher_.join();
}

absl::Status ClusterHealth::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

void ClusterHealth::SetStatus(absl::Status status) {
  absl::MutexLock lock(&mu_);
  status_ = std::move(status);
}

void ClusterHealth::SetDown(absl::Status why) {
  if (on_serving_) on_serving_(false);
  absl::MutexLock lock(&mu_);
  down_ = true;
  status_ = std::move(why);
}

bool ClusterHealth::down() const {
  absl::MutexLock lock(&mu_);
  return down_;
}

absl::Status ClusterHealth::CheckKnownDead() {
  Check();
  if (!lost_gone_) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("the cluster failed: ", lost_reason_));
}

void ClusterHealth::Check() {
  if (heartbeats_ == nullptr) return;
  std::vector<int> now_lost = heartbeats_->LostWorkers();
  if (now_lost == lost_) return;
  lost_ = std::move(now_lost);
  if (lost_.empty()) {
    lost_reason_.clear();
    lost_gone_ = false;
    if (down()) return;
    std::fprintf(stderr, "moe-coordinator: every worker reports again; accepting requests\n");
    scheduler_->ResumeAdmitting();
    if (on_serving_) on_serving_(true);
    SetStatus(absl::OkStatus());
    return;
  }
  std::vector<std::string> why;
  lost_gone_ = false;
  for (int rank : lost_) {
    const absl::Status gone = heartbeats_->CheckAlive(rank);
    lost_gone_ |= !gone.ok();
    why.push_back(
        gone.ok() ? absl::StrCat("worker rank ", rank, " is not answering (its heartbeat is lost)")
                  : std::string(gone.message()));
  }
  lost_reason_ = absl::StrJoin(why, "; ");
  if (down()) return;  // the caller says what it does with a lost worker now
  std::fprintf(stderr, "moe-coordinator: worker rank %s lost: %s; refusing new requests\n",
               absl::StrJoin(lost_, ", ").c_str(), lost_reason_.c_str());
  scheduler_->StopAdmitting(
      absl::UnavailableError(absl::StrCat(lost_reason_, "; the cluster cannot serve")));
  if (on_serving_) on_serving_(false);
  SetStatus(absl::UnavailableError(lost_reason_));
}

}  // namespace moe
