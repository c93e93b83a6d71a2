#include "worker/expert_host.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"

namespace moe {

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
  const int64_t inter = c.intermediate_size, hidden = c.hidden_size;
  expert_seconds_.assign(static_cast<size_t>(c.num_local_experts), 0.0);
  for (int e = 0; e < batch.n_experts(); ++e) {
    const int64_t begin = batch.expert_offsets[e], rows = batch.expert_offsets[e + 1] - begin;
    if (rows == 0) continue;
    const auto start = std::chrono::steady_clock::now();
    if (rows < 0 || !layer.owned[e]) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer ", batch.layer, " expert ", e, " is not hosted here"));
    }
    const ExpertWeights& w = layer.experts[e];
    const float* x = batch.rows.data() + begin * hidden;  // [rows, hidden]
    gate_.resize(static_cast<size_t>(rows * inter));
    up_.resize(static_cast<size_t>(rows * inter));
    kernels::MatMul(x, rows, w.w1, gate_.data());                  // [rows, inter]
    kernels::MatMul(x, rows, w.w3, up_.data());                    // [rows, inter]
    kernels::SiluMul(gate_.data(), up_.data(), rows * inter, gate_.data());
    kernels::MatMul(gate_.data(), rows, w.w2, out + begin * hidden);  // [rows, hidden]
    expert_seconds_[e] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return absl::OkStatus();
}

}  // namespace moe
