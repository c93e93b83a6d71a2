// ExpertReloader: the worker's side of a live re-placement (PlacementSwitcher). Begin starts a
// loader thread that maps the checkpoint again (the same files as at start-up: cheap, and the
// page cache is shared), uploads the experts the new placement adds to this rank into the host's
// staging table (ExpertHost::Stage) while serving goes on, and reports when done. Commit, between
// steps on the serving thread, switches the host to the new placement and frees the experts it
// no longer gives this rank; Abort drops what was staged.
//
// Memory while loading: the experts in force plus the ones being added, never more.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/exchange/expert_host.h"
#include "worker/expert_server.h"

namespace moe {

class ExpertReloader : public PlacementSwitcher {
 public:
  // host: not owned, outlives the reloader; model_dir: the checkpoint this rank loaded.
  ExpertReloader(int rank, std::string model_dir, ExpertHost* host)
      : rank_(rank), model_dir_(std::move(model_dir)), host_(host) {}
  ~ExpertReloader() override;

  absl::Status Begin(ExpertPlacement next, uint32_t epoch) override;
  PlacementReply Progress() override;
  absl::StatusOr<const ExpertPlacement*> Commit() override;
  void Abort() override;

 private:
  void Load();  // the loader thread
  void Join();

  const int rank_;
  const std::string model_dir_;
  ExpertHost* host_;
  std::unique_ptr<ExpertPlacement>
      current_;                            // the last committed; the start-up one is the worker's
  std::unique_ptr<ExpertPlacement> next_;  // begun, not committed
  uint32_t epoch_ = 0;
  std::thread loader_;

  absl::Mutex mu_;
  PlacementState state_ ABSL_GUARDED_BY(mu_) = PlacementState::kIdle;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  int experts_loaded_ ABSL_GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point started_ ABSL_GUARDED_BY(mu_);
  double seconds_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe
