// LocalEngine: the whole model in one process: attention side and every expert, joined by the
// in-process exchange, on one backend. What moe-generate, moe-logits and moe-bench run.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/inference/model_runner.h"
#include "core/base/op_timer.h"
#include "core/exchange/expert_exchange.h"
#include "core/exchange/expert_host.h"
#include "core/model/model_weights.h"
#include "core/model/weight_formats.h"
#include "core/placement/expert_placement.h"
#include "kernels/backend.h"

namespace moe {

class LocalEngine {
 public:
  // Runs on the backend device names (the CPU by default). timed: time every stage into times(),
  // which on a GPU waits for the device after each one, so only the benchmark asks for it.
  // formats: which tensor classes to hold quantized (--quantize).
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Create(
      const std::string& model_dir, const kernels::DeviceOptions& device = {}, bool timed = false,
      const WeightFormats& formats = {});
  // The same on a backend already made (the tools make it with cli::MakeBackend, whose errors name
  // their flags).
  static absl::StatusOr<std::unique_ptr<LocalEngine>> Create(
      const std::string& model_dir, std::unique_ptr<kernels::Backend> backend, bool timed = false,
      const WeightFormats& formats = {});

  ModelRunner* runner() { return runner_.get(); }
  ExpertExchange* exchange() { return exchange_.get(); }  // the experts, in this process
  const ModelWeights& weights() const { return *weights_; }
  OpTimes* times() { return timed_ ? &times_ : nullptr; }

 private:
  LocalEngine() = default;
  bool timed_ = false;
  OpTimes times_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<ModelWeights> weights_;
  ExpertPlacement placement_;  // every expert in one slot, in this process
  std::unique_ptr<ExpertHost> experts_;
  std::unique_ptr<InProcessExchange> exchange_;
  std::unique_ptr<ModelRunner> runner_;
};

}  // namespace moe
