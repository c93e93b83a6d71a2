// ExpertHost: the expert math both sides run. Runs the slots this process hosts on the rows
// dispatched to them, one batched SwiGLU per non-empty slot with its logical expert's weights, on
// a kernels::Backend (the CPU, or a GPU: weights uploaded once). Rows are in that backend's
// memory. The same code serves the single-process tools (through the in-process exchange) and the
// cluster's workers (through ServeExperts, which stages rows when its data plane needs it).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/op_timer.h"
#include "core/exchange/expert_exchange.h"
#include "core/model/model_weights.h"
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

  // Live re-placement, in two halves, so that loading never stalls serving:
  //  - Stage (a loader thread, one at a time, while RunExperts goes on): uploads every expert that
  //    `source` maps (weights loaded with LoadOptions::owns_expert: the experts to add) and this
  //    host has not loaded, into a staging table; serving does not see them yet.
  //  - Switch (the RunExperts thread, between steps; after Stage returned): the staged experts
  //    join, `next` (not owned, outlives the host) becomes the placement, and loaded experts for
  //    which keep(layer, expert) is false are freed. DropStaged frees the staged ones instead.
  // Memory: what is loaded plus what is staged, until Switch or DropStaged.
  absl::Status Stage(std::unique_ptr<ModelWeights> source);
  void Switch(const ExpertPlacement* next, const std::function<bool(int layer, int expert)>& keep);
  void DropStaged();
  bool Loaded(int layer, int expert) const { return experts_[layer][expert].w1.data != nullptr; }
  int LoadedCount() const;

 private:
  ExpertHost(const ModelWeights* weights, const ExpertPlacement* placement,
             kernels::Backend* backend, OpTimes* times);
  // The owned experts of `source` not loaded yet, into `table` ([layer][expert]).
  absl::Status Upload(const ModelWeights& source, std::vector<std::vector<ExpertWeights>>* table);
  void Free(ExpertWeights* w);
  // Checks the layout against the model, the placement and the experts loaded here; reserves
  // the scratch.
  absl::Status Prepare(const ExpertLayout& layout);

  const ModelWeights* weights_;  // the config, and the experts loaded at Create
  const ExpertPlacement* placement_;
  kernels::Backend* backend_;
  OpTimes* times_;
  bool time_experts_ = true;
  std::vector<std::vector<ExpertWeights>> experts_;  // [layer][expert] as the backend reads them;
                                                     // null data: not loaded here
  std::vector<std::vector<ExpertWeights>> staged_;   // [layer][expert] Stage's, not yet serving
  // Mappings of later Stage calls: a backend that reads weights in place (no copy) reads them.
  std::vector<std::unique_ptr<ModelWeights>> sources_;
  std::unique_ptr<ModelWeights> staged_source_;
  kernels::BackendArray<float> gate_;  // [rows, intermediate] scratch
  kernels::BackendArray<float> up_;    // [rows, intermediate] scratch
  std::vector<double> slot_seconds_;   // [slots] of the last layout
};

}  // namespace moe
