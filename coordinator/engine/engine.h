// Engine: the coordinator's step loop, as nano-vllm's LLMEngine.step() is its. It owns the
// scheduler (the listeners submit to it) and runs one batch per step on the engine thread; between
// steps it lets a live re-placement advance, so that a move commits at a step boundary.
#pragma once

#include <atomic>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "coordinator/engine/rebalancer.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/inference/scheduler.h"
#include "core/model/tokenizer.h"

namespace moe {

class Engine {
 public:
  // runner, tokenizer: not owned. rebalancer: not owned; null means no live re-placement.
  Engine(ModelRunner* runner, const Tokenizer* tokenizer, SchedulerOptions options,
         Rebalancer* rebalancer);

  Scheduler* scheduler() { return &scheduler_; }
  SchedulerStats stats() const { return scheduler_.stats(); }

  // Engine thread: steps until `stop` becomes true (OK) or the model cannot run any more: a worker
  // lost mid-step, a failed re-placement (that error). Either way the rebalancer is stopped.
  absl::Status RunUntil(const std::atomic<bool>& stop);
  // Engine thread, after RunUntil: refuses new requests and steps the admitted ones to their end
  // within `grace`; what is left then fails with UNAVAILABLE. A step that fails ends the drain:
  // everything fails with it and it is returned.
  absl::Status Drain(absl::Duration grace);
  // Refuses new requests and ends every admitted one with `why` (the cluster cannot serve).
  void FailAll(const absl::Status& why);

 private:
  Rebalancer* rebalancer_;
  Scheduler scheduler_;
};

}  // namespace moe
