#include "coordinator/engine/engine.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace moe {

Engine::Engine(ModelRunner* runner, const Tokenizer* tokenizer, SchedulerOptions options,
               Rebalancer* rebalancer)
    : rebalancer_(rebalancer), scheduler_(runner, tokenizer, std::move(options)) {}

absl::Status Engine::RunUntil(const std::atomic<bool>& stop) {
  absl::Status status;
  // With a rebalancer the wait is shorter: its ticks are due between steps even when idle.
  const absl::Duration idle_wait = absl::Milliseconds(rebalancer_ != nullptr ? 20 : 50);
  while (!stop.load()) {
    if (rebalancer_ != nullptr) {
      status = rebalancer_->Tick();
      if (!status.ok()) break;
    }
    if (!scheduler_.WaitForWork(idle_wait)) continue;
    status = scheduler_.Step();
    if (!status.ok()) break;
  }
  if (rebalancer_ != nullptr) rebalancer_->Stop(/*cluster_usable=*/status.ok());
  return status;
}

absl::Status Engine::Drain(absl::Duration grace) {
  scheduler_.StopAdmitting(absl::UnavailableError("the server is shutting down"));
  const absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    const SchedulerStats s = scheduler_.stats();
    if (s.running == 0 && s.waiting == 0) break;
    if (!scheduler_.WaitForWork(absl::Milliseconds(10))) continue;
    if (absl::Status step = scheduler_.Step(); !step.ok()) {
      scheduler_.FailAll(
          absl::UnavailableError(absl::StrCat("the cluster failed: ", step.message())));
      return step;
    }
  }
  scheduler_.FailAll(absl::UnavailableError("the server shut down before the request finished"));
  return absl::OkStatus();
}

void Engine::FailAll(const absl::Status& why) {
  scheduler_.StopAdmitting(why);
  scheduler_.FailAll(why);
}

}  // namespace moe
