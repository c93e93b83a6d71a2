#include "coordinator/tools/local_engine.h"

#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Create(const std::string& model_dir) {
  auto e = std::unique_ptr<LocalEngine>(new LocalEngine());
  MOE_ASSIGN_OR_RETURN(e->weights_, LoadModelWeights(model_dir));
  e->experts_ = std::make_unique<ExpertHost>(e->weights_.get(), &e->times_);
  e->exchange_ = std::make_unique<InProcessExchange>(e->experts_.get());
  e->runner_ = std::make_unique<ModelRunner>(e->weights_.get(), e->exchange_.get(), &e->times_);
  return e;
}

}  // namespace moe
