// ExpertExchange: the seam between the attention side and the experts, after DeepEP's
// dispatch/combine. The coordinator hands it one layer's routed rows, grouped by physical expert
// slot (core/placement/expert_layout.h); it returns every row's expert output in the same order.
// In-process (here) and cluster (core/exchange/cluster_exchange.h: MPI, or NCCL on GPUs)
// implementations carry the same contract.
//
// Rows never leave the memory of the backend that computed them as far as the caller can tell:
// whatever staging a data plane needs (device -> host -> MPI and back) happens inside the
// exchange, never in the forward pass.
#pragma once

#include "absl/status/status.h"
#include "core/placement/expert_layout.h"
#include "core/placement/expert_placement.h"

namespace moe {

// Something that runs experts on rows: the worker side (core/exchange/expert_host.h).
class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  // rows, out: [layout.n_rows(), layout.hidden] in the memory of the runner's own backend; row i
  // of out = the expert of row i's slot applied to row i. Fails if the layout does not fit the
  // model or a slot with rows holds an expert not loaded here. out is complete when it returns.
  virtual absl::Status RunExperts(const ExpertLayout& layout, const float* rows, float* out) = 0;
  // Seconds the last RunExperts spent in each slot ([layout.n_slots()]), for telemetry; null
  // when the runner does not time them.
  virtual const double* LastSlotSeconds() const { return nullptr; }
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // The slots this exchange reaches: the dispatch plan maps each routed choice to one of them.
  virtual const ExpertPlacement& placement() const = 0;
  // Sends each row to its slot's host and gathers the outputs. rows, out: [layout.n_rows(),
  // layout.hidden] in the memory of the backend this exchange serves (the forward pass's: host
  // memory on the CPU, device memory on a GPU). REQUIRES: that backend's queued work is finished
  // (Sync) before the call. out is complete when it returns.
  virtual absl::Status Dispatch(const ExpertLayout& layout, const float* rows, float* out) = 0;

  // Two micro-batches in flight, so that one's experts run while the other's attention does:
  // Post sends a layer's rows and returns; Complete(micro_batch) waits until `out` holds their
  // outputs. micro_batch is 0 or 1, each posted at most once before its Complete, completed in
  // the order posted; layout, rows and out must stay valid until then. The default dispatches
  // within Post (nothing overlaps); overlaps() says whether Post returns before the experts run.
  static constexpr int kMaxInFlight = 2;
  virtual absl::Status Post(const ExpertLayout& layout, const float* rows, float* out,
                            int micro_batch) {
    return Dispatch(layout, rows, out);
  }
  virtual absl::Status Complete(int micro_batch) { return absl::OkStatus(); }
  virtual bool overlaps() const { return false; }
};

// Single-process: calls the runner directly, on the rows in place (no copy at all).
// REQUIRES: the runner computes on the forward pass's backend, so it reads the rows where they are.
class InProcessExchange : public ExpertExchange {
 public:
  // Neither is owned; placement: ExpertPlacement::InProcess, one slot per expert.
  InProcessExchange(ExpertRunner* runner, const ExpertPlacement* placement)
      : runner_(runner), placement_(placement) {}
  const ExpertPlacement& placement() const override { return *placement_; }
  absl::Status Dispatch(const ExpertLayout& layout, const float* rows, float* out) override {
    return runner_->RunExperts(layout, rows, out);
  }

 private:
  ExpertRunner* runner_;
  const ExpertPlacement* placement_;
};

}  // namespace moe
