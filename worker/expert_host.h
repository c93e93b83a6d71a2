// ExpertHost: runs the experts this process owns on the rows dispatched to them, one batched
// SwiGLU per expert. The same code serves the single-process tools and the MPI workers.
#pragma once

#include <vector>

#include "core/expert_exchange.h"
#include "core/model_weights.h"
#include "core/op_timer.h"

namespace moe {

class ExpertHost : public ExpertRunner {
 public:
  // weights: loaded with the experts this host owns; not owned, must outlive the host.
  explicit ExpertHost(const ModelWeights* weights, OpTimes* times = nullptr)
      : weights_(weights), times_(times) {}

  absl::Status RunExperts(const ExpertBatch& batch, float* out) override;
  const double* LastExpertSeconds() const override { return expert_seconds_.data(); }

 private:
  const ModelWeights* weights_;
  OpTimes* times_;
  std::vector<float> gate_;  // [rows, intermediate] scratch
  std::vector<float> up_;    // [rows, intermediate] scratch
  std::vector<double> expert_seconds_;  // [experts] of the last batch
};

}  // namespace moe
