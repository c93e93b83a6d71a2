#include "coordinator/tools/local_engine.h"

#include "core/base/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Create(
    const std::string& model_dir, const kernels::DeviceOptions& device, bool timed,
    const WeightFormats& formats) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend, kernels::MakeBackend(device));
  return Create(model_dir, std::move(backend), timed, formats);
}

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Create(
    const std::string& model_dir, std::unique_ptr<kernels::Backend> backend, bool timed,
    const WeightFormats& formats) {
  auto e = std::unique_ptr<LocalEngine>(new LocalEngine());
  e->timed_ = timed;
  e->backend_ = std::move(backend);
  LoadOptions load;
  load.formats = formats;
  MOE_ASSIGN_OR_RETURN(e->weights_, LoadModelWeights(model_dir, load));
  const MixtralConfig& c = e->weights_->config;
  e->placement_ = ExpertPlacement::InProcess(c.num_hidden_layers, c.num_local_experts);
  MOE_ASSIGN_OR_RETURN(e->experts_,
                       ExpertHost::Create(e->weights_.get(), &e->placement_, e->backend_.get(),
                                          e->times(), /*time_experts=*/timed));
  e->exchange_ = std::make_unique<InProcessExchange>(e->experts_.get(), &e->placement_);
  MOE_ASSIGN_OR_RETURN(e->runner_, ModelRunner::Create(e->weights_.get(), e->exchange_.get(),
                                                       e->backend_.get(), e->times()));
  return e;
}

}  // namespace moe
