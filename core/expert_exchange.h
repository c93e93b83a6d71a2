// ExpertExchange: the seam between the attention side and the experts. The coordinator hands it
// one layer's routed rows, grouped by expert; it returns every row's expert output in the same
// order. In-process (here), MPI and NCCL implementations carry the same contract.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

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
  // Seconds the last RunExperts spent in each expert ([n_experts]), for telemetry; null when the
  // runner does not time them.
  virtual const double* LastExpertSeconds() const { return nullptr; }
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // Sends each row to its expert's owner and gathers the outputs; out: [n_rows, hidden].
  virtual absl::Status Exchange(const ExpertBatch& batch, std::vector<float>* out) = 0;
};

// Single-process: calls the runner directly, no copies beyond the output.
class InProcessExchange : public ExpertExchange {
 public:
  explicit InProcessExchange(ExpertRunner* runner) : runner_(runner) {}
  absl::Status Exchange(const ExpertBatch& batch, std::vector<float>* out) override {
    out->resize(static_cast<size_t>(batch.n_rows() * batch.hidden));
    return runner_->RunExperts(batch, out->data());
  }

 private:
  ExpertRunner* runner_;  // not owned
};

}  // namespace moe
