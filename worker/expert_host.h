// ExpertHost: runs the experts this process owns on the rows dispatched to them, one batched
// SwiGLU per non-empty expert, on a kernels::Backend (the CPU, or a GPU: weights uploaded once).
// Rows come in host memory (copied to the device and back per batch) or already in the backend's
// memory (the in-process exchange on a GPU, and NCCL). The same code serves the single-process
// tools and the cluster's workers.
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
  // weights: loaded with the experts this host owns; neither it nor backend is owned, and both
  // must outlive the host. Fails when the backend cannot hold the experts. time_experts: measure
  // each expert's time (LastExpertSeconds, for load telemetry), which on a GPU waits for the
  // device after every expert; off, a GPU host reports no per-expert times.
  static absl::StatusOr<std::unique_ptr<ExpertHost>> Create(const ModelWeights* weights,
                                                            kernels::Backend* backend,
                                                            OpTimes* times = nullptr,
                                                            bool time_experts = true);

  absl::Status RunExperts(const ExpertBatch& batch, float* out) override;
  // Its own backend's memory, or any host memory when it runs on the CPU.
  bool TakesBackendRows(const kernels::Backend& memory) const override;
  absl::Status RunExpertsOnBackendRows(const ExpertBatch& layout, const float* rows,
                                       float* out) override;
  const double* LastExpertSeconds() const override {
    return time_experts_ || backend_->host_memory() ? expert_seconds_.data() : nullptr;
  }

 private:
  ExpertHost(const ModelWeights* weights, kernels::Backend* backend, OpTimes* times);
  absl::Status Upload();
  // Checks the layout against the model and what is hosted here; reserves the scratch.
  absl::Status Prepare(const ExpertBatch& layout);
  // The experts on rows and out in this backend's memory; scratch already reserved.
  absl::Status Run(const ExpertBatch& layout, const float* rows, float* out);

  const ModelWeights* weights_;
  kernels::Backend* backend_;
  OpTimes* times_;
  bool time_experts_ = true;
  std::vector<std::vector<ExpertWeights>> experts_;  // [layer][expert] as the backend reads them
  kernels::BackendArray<float> rows_;  // [rows, hidden] the batch, when not in host memory
  kernels::BackendArray<float> out_;   // [rows, hidden]
  kernels::BackendArray<float> gate_;  // [rows, intermediate] scratch
  kernels::BackendArray<float> up_;    // [rows, intermediate] scratch
  std::vector<double> expert_seconds_;  // [experts] of the last batch
};

}  // namespace moe
