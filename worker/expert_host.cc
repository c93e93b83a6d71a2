#include "worker/expert_host.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

ExpertHost::ExpertHost(const ModelWeights* weights, kernels::Backend* backend, OpTimes* times)
    : weights_(weights), backend_(backend), times_(times), rows_(backend), out_(backend),
      gate_(backend), up_(backend) {}

absl::StatusOr<std::unique_ptr<ExpertHost>> ExpertHost::Create(const ModelWeights* weights,
                                                                kernels::Backend* backend,
                                                                OpTimes* times, bool time_experts) {
  std::unique_ptr<ExpertHost> host(new ExpertHost(weights, backend, times));
  host->time_experts_ = time_experts;
  MOE_RETURN_IF_ERROR(host->Upload());
  return host;
}

absl::Status ExpertHost::Upload() {
  experts_.assign(weights_->layers.size(), {});
  for (size_t l = 0; l < weights_->layers.size(); ++l) {
    const LayerWeights& layer = weights_->layers[l];
    experts_[l].resize(layer.experts.size());
    for (size_t e = 0; e < layer.experts.size(); ++e) {
      if (!layer.owned[e]) continue;
      ExpertWeights& w = experts_[l][e];
      MOE_ASSIGN_OR_RETURN(w.w1, UploadWeight(*weights_, layer.experts[e].w1, backend_));
      MOE_ASSIGN_OR_RETURN(w.w2, UploadWeight(*weights_, layer.experts[e].w2, backend_));
      MOE_ASSIGN_OR_RETURN(w.w3, UploadWeight(*weights_, layer.experts[e].w3, backend_));
    }
  }
  return backend_->Sync();
}

absl::Status ExpertHost::Prepare(const ExpertBatch& layout) {
  const MixtralConfig& c = weights_->config;
  if (layout.layer < 0 || layout.layer >= c.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch for layer ", layout.layer,
                                                   " of a ", c.num_hidden_layers, "-layer model"));
  }
  if (layout.n_experts() != c.num_local_experts || layout.hidden != c.hidden_size ||
      layout.expert_offsets.front() != 0) {
    return absl::InvalidArgumentError("expert batch does not match the model's shape");
  }
  const LayerWeights& layer = weights_->layers[layout.layer];
  for (int e = 0; e < layout.n_experts(); ++e) {
    const int64_t rows = layout.expert_offsets[e + 1] - layout.expert_offsets[e];
    if (rows < 0) return absl::InvalidArgumentError("expert batch offsets decrease");
    if (rows > 0 && !layer.owned[e]) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", layout.layer, " expert ", e, " is not hosted here"));
    }
  }
  const int64_t n_rows = layout.n_rows(), inter = c.intermediate_size;
  if (!gate_.Reserve(n_rows * inter) || !up_.Reserve(n_rows * inter)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of ", backend_->Describe(), " memory for ", n_rows, " expert rows"));
  }
  return absl::OkStatus();
}

bool ExpertHost::TakesBackendRows(const kernels::Backend& memory) const {
  return &memory == backend_ || (memory.host_memory() && backend_->host_memory());
}

absl::Status ExpertHost::RunExpertsOnBackendRows(const ExpertBatch& layout, const float* rows,
                                                 float* out) {
  ScopedOpTimer timer(times_, Op::kExperts);
  MOE_RETURN_IF_ERROR(Prepare(layout));
  return Run(layout, rows, out);
}

absl::Status ExpertHost::RunExperts(const ExpertBatch& batch, float* out) {
  ScopedOpTimer timer(times_, Op::kExperts);
  MOE_RETURN_IF_ERROR(Prepare(batch));
  const int64_t n_rows = batch.n_rows(), hidden = batch.hidden;
  if (static_cast<int64_t>(batch.rows.size()) != n_rows * hidden) {
    return absl::InvalidArgumentError("expert batch rows do not match its offsets");
  }
  kernels::Backend* b = backend_;
  if (b->host_memory()) return Run(batch, batch.rows.data(), out);
  if (!rows_.Reserve(n_rows * hidden) || !out_.Reserve(n_rows * hidden)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of ", b->Describe(), " memory for ", n_rows, " expert rows"));
  }
  b->ToDevice(rows_.data(), batch.rows.data(), batch.rows.size() * sizeof(float));
  MOE_RETURN_IF_ERROR(Run(batch, rows_.data(), out_.data()));
  b->ToHost(out, out_.data(), static_cast<size_t>(n_rows * hidden) * sizeof(float));
  return b->Sync();
}

absl::Status ExpertHost::Run(const ExpertBatch& layout, const float* x_all, float* out_all) {
  const MixtralConfig& c = weights_->config;
  const int64_t inter = c.intermediate_size, hidden = c.hidden_size;
  kernels::Backend* b = backend_;
  const bool host = b->host_memory();
  expert_seconds_.assign(static_cast<size_t>(c.num_local_experts), 0.0);
  for (int e = 0; e < layout.n_experts(); ++e) {
    const int64_t begin = layout.expert_offsets[e], rows = layout.expert_offsets[e + 1] - begin;
    if (rows == 0) continue;
    const auto start = std::chrono::steady_clock::now();
    const ExpertWeights& w = experts_[layout.layer][e];
    const float* x = x_all + begin * hidden;                   // [rows, hidden]
    b->MatMul(x, rows, w.w1, gate_.data());                    // [rows, inter]
    b->MatMul(x, rows, w.w3, up_.data());                      // [rows, inter]
    b->SiluMul(gate_.data(), up_.data(), rows * inter, gate_.data());
    b->MatMul(gate_.data(), rows, w.w2, out_all + begin * hidden);  // [rows, hidden]
    // A device runs the expert asynchronously; waiting here makes the time the expert's own.
    if (!host && time_experts_) MOE_RETURN_IF_ERROR(b->Sync());
    expert_seconds_[e] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return b->Sync();
}

}  // namespace moe
