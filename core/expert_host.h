// ExpertHost: the expert math both sides run. Runs the slots this process hosts on the rows
// dispatched to them, one batched SwiGLU per non-empty slot with its logical expert's weights, on
// a kernels::Backend (the CPU, or a GPU: weights uploaded once). Rows are in that backend's
// memory. The same code serves the single-process tools (through the in-process exchange) and the
// cluster's workers (through ServeExperts, which stages rows when its data plane needs it).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/expert_exchange.h"
#include "core/model_weights.h"
#include "core/op_timer.h"
#include "kernels/backend.h"

namespace moe {

class ExpertHost : public ExpertRunner {
 public:
  // weights: loaded with the experts this host owns; placement: which logical expert each slot
  // holds. None of weights, placement, backend is owned, and all must outlive the host. Fails when
  // the placement does not fit the model or the backend cannot hold the experts. time_experts:
  // measure each slot's time (LastSlotSeconds, for load telemetry), which on a GPU waits for the
  // device after every slot; off, a GPU host reports no per-slot times.
  static absl::StatusOr<std::unique_ptr<ExpertHost>> Create(const ModelWeights* weights,
                                                            const ExpertPlacement* placement,
                                                            kernels::Backend* backend,
                                                            OpTimes* times = nullptr,
                                                            bool time_experts = true);

  // rows, out in this host's backend memory (see ExpertRunner).
  absl::Status RunExperts(const ExpertLayout& layout, const float* rows, float* out) override;
  const double* LastSlotSeconds() const override {
    return time_experts_ || backend_->host_memory() ? slot_seconds_.data() : nullptr;
  }

 private:
  ExpertHost(const ModelWeights* weights, const ExpertPlacement* placement,
             kernels::Backend* backend, OpTimes* times);
  absl::Status Upload();
  // Checks the layout against the model, the placement and the experts loaded here; reserves
  // the scratch.
  absl::Status Prepare(const ExpertLayout& layout);

  const ModelWeights* weights_;
  const ExpertPlacement* placement_;
  kernels::Backend* backend_;
  OpTimes* times_;
  bool time_experts_ = true;
  std::vector<std::vector<ExpertWeights>> experts_;  // [layer][expert] as the backend reads them
  kernels::BackendArray<float> gate_;                // [rows, intermediate] scratch
  kernels::BackendArray<float> up_;                  // [rows, intermediate] scratch
  std::vector<double> slot_seconds_;                 // [slots] of the last layout
};

}  // namespace moe
