// ExpertExchange: the seam between the attention side and the experts. The coordinator hands it
// one layer's routed rows, grouped by expert; it returns every row's expert output in the same
// order. In-process (here) and cluster (core/cluster_exchange.h: MPI, or NCCL on GPUs)
// implementations carry the same contract.
//
// Rows travel in one of two ways. Exchange() takes them in host memory. ExchangeBackendRows()
// takes them where the forward pass computed them, in a kernels::Backend's memory (GPU memory for
// CUDA), so that a GPU coordinator talking to GPU experts never copies rows through the host; an
// exchange says which backends' memory it can read with TakesBackendRows().
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace moe {

// The rows of one layer's dispatch. Rows of expert e are [expert_offsets[e], expert_offsets[e+1]).
struct ExpertBatch {
  int layer = 0;
  int64_t hidden = 0;                    // row width
  std::vector<int64_t> expert_offsets;   // [n_experts + 1], non-decreasing, starts at 0
  std::vector<float> rows;               // [n_rows, hidden], grouped by expert

  int64_t n_rows() const { return expert_offsets.empty() ? 0 : expert_offsets.back(); }
  int n_experts() const { return static_cast<int>(expert_offsets.size()) - 1; }
};

// Something that runs experts on rows: the worker side (worker/ExpertHost).
class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  // out: [batch.n_rows(), batch.hidden], row i = expert(row i). Fails if an expert with rows is
  // not hosted here.
  virtual absl::Status RunExperts(const ExpertBatch& batch, float* out) = 0;
  // The same on rows in the memory of `memory` (layout.rows unused): rows and out, both
  // [layout.n_rows(), layout.hidden], are that backend's buffers. Only for backends this runner
  // TakesBackendRows of.
  virtual bool TakesBackendRows(const kernels::Backend& memory) const { return false; }
  virtual absl::Status RunExpertsOnBackendRows(const ExpertBatch& layout, const float* rows,
                                               float* out) {
    return absl::UnimplementedError("this expert runner takes host rows only");
  }
  // Seconds the last RunExperts spent in each expert ([n_experts]), for telemetry; null when the
  // runner does not time them.
  virtual const double* LastExpertSeconds() const { return nullptr; }
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // Sends each row to its expert's owner and gathers the outputs; out: [n_rows, hidden].
  virtual absl::Status Exchange(const ExpertBatch& batch, std::vector<float>* out) = 0;
  // The same with rows and out in the memory of a backend this exchange TakesBackendRows of
  // (layout.rows unused; both [layout.n_rows(), layout.hidden]). The backend's queued work must be
  // finished (Sync) before the call; out is complete when it returns.
  virtual bool TakesBackendRows(const kernels::Backend& memory) const { return false; }
  virtual absl::Status ExchangeBackendRows(const ExpertBatch& layout, const float* rows, float* out) {
    return absl::UnimplementedError("this exchange takes host rows only");
  }
};

// Single-process: calls the runner directly. When the runner shares the forward pass's backend,
// rows stay in that backend's memory: no copy at all.
class InProcessExchange : public ExpertExchange {
 public:
  explicit InProcessExchange(ExpertRunner* runner) : runner_(runner) {}
  absl::Status Exchange(const ExpertBatch& batch, std::vector<float>* out) override {
    out->resize(static_cast<size_t>(batch.n_rows() * batch.hidden));
    return runner_->RunExperts(batch, out->data());
  }
  bool TakesBackendRows(const kernels::Backend& memory) const override {
    return runner_->TakesBackendRows(memory);
  }
  absl::Status ExchangeBackendRows(const ExpertBatch& layout, const float* rows, float* out) override {
    return runner_->RunExpertsOnBackendRows(layout, rows, out);
  }

 private:
  ExpertRunner* runner_;  // not owned
};

}  // namespace moe
