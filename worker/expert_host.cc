#include "worker/expert_host.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

ExpertHost::ExpertHost(const ModelWeights* weights, kernels::Backend* backend, OpTimes* times)
    : weights_(weights), backend_(backend), times_(times), rows_(backend), out_(backend),
      gate_(backend), up_(backend) {}

ExpertHost::ExpertHost(const ModelWeights* weights, OpTimes* times)
    : ExpertHost(weights, kernels::CpuBackend(), times) {
  MOE_CHECK(Upload().ok());  // the CPU backend views the weights where they are
}

absl::StatusOr<std::unique_ptr<ExpertHost>> ExpertHost::Create(const ModelWeights* weights,
                                                                kernels::Backend* backend,
                                                                OpTimes* times) {
  std::unique_ptr<ExpertHost> host(new ExpertHost(weights, backend, times));
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
      MOE_ASSIGN_OR_RETURN(w.w1, backend_->Upload(layer.experts[e].w1));
      MOE_ASSIGN_OR_RETURN(w.w2, backend_->Upload(layer.experts[e].w2));
      MOE_ASSIGN_OR_RETURN(w.w3, backend_->Upload(layer.experts[e].w3));
    }
  }
  return backend_->Sync();
}

absl::Status ExpertHost::RunExperts(const ExpertBatch& batch, float* out) {
  ScopedOpTimer timer(times_, Op::kExperts);
  const MixtralConfig& c = weights_->config;
  if (batch.layer < 0 || batch.layer >= c.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch for layer ", batch.layer,
                                                   " of a ", c.num_hidden_layers, "-layer model"));
  }
  if (batch.n_experts() != c.num_local_experts || batch.hidden != c.hidden_size ||
      batch.expert_offsets.front() != 0 ||
      static_cast<int64_t>(batch.rows.size()) != batch.n_rows() * batch.hidden) {
    return absl::InvalidArgumentError("expert batch does not match the model's shape");
  }
  const LayerWeights& layer = weights_->layers[batch.layer];
  for (int e = 0; e < batch.n_experts(); ++e) {
    const int64_t rows = batch.expert_offsets[e + 1] - batch.expert_offsets[e];
    if (rows < 0) return absl::InvalidArgumentError("expert batch offsets decrease");
    if (rows > 0 && !layer.owned[e]) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", batch.layer, " expert ", e, " is not hosted here"));
    }
  }
  const int64_t inter = c.intermediate_size, hidden = c.hidden_size, n_rows = batch.n_rows();
  kernels::Backend* b = backend_;
  const bool host = b->host_memory();
  if (!gate_.Reserve(n_rows * inter) || !up_.Reserve(n_rows * inter) ||
      (!host && (!rows_.Reserve(n_rows * hidden) || !out_.Reserve(n_rows * hidden)))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of ", b->Describe(), " memory for ", n_rows, " expert rows"));
  }
  const float* x_all = batch.rows.data();
  float* out_all = out;
  if (!host) {
    b->ToDevice(rows_.data(), batch.rows.data(), batch.rows.size() * sizeof(float));
    x_all = rows_.data();
    out_all = out_.data();
  }
  expert_seconds_.assign(static_cast<size_t>(c.num_local_experts), 0.0);
  for (int e = 0; e < batch.n_experts(); ++e) {
    const int64_t begin = batch.expert_offsets[e], rows = batch.expert_offsets[e + 1] - begin;
    if (rows == 0) continue;
    const auto start = std::chrono::steady_clock::now();
    const ExpertWeights& w = experts_[batch.layer][e];
    const float* x = x_all + begin * hidden;                   // [rows, hidden]
    b->MatMul(x, rows, w.w1, gate_.data());                    // [rows, inter]
    b->MatMul(x, rows, w.w3, up_.data());                      // [rows, inter]
    b->SiluMul(gate_.data(), up_.data(), rows * inter, gate_.data());
    b->MatMul(gate_.data(), rows, w.w2, out_all + begin * hidden);  // [rows, hidden]
    // A device runs the expert asynchronously; waiting here makes the time the expert's own.
    if (!host) MOE_RETURN_IF_ERROR(b->Sync());
    expert_seconds_[e] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (!host) b->ToHost(out, out_.data(), static_cast<size_t>(n_rows * hidden) * sizeof(float));
  return b->Sync();
}

}  // namespace moe
