#include "core/exchange/expert_host.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace moe {

ExpertHost::ExpertHost(const ModelWeights* weights, const ExpertPlacement* placement,
                       kernels::Backend* backend, OpTimes* times)
    : weights_(weights),
      placement_(placement),
      backend_(backend),
      times_(times),
      gate_(backend),
      up_(backend) {}

absl::StatusOr<std::unique_ptr<ExpertHost>> ExpertHost::Create(const ModelWeights* weights,
                                                               const ExpertPlacement* placement,
                                                               kernels::Backend* backend,
                                                               OpTimes* times, bool time_experts) {
  const MixtralConfig& c = weights->config;
  if (placement->n_layers() != c.num_hidden_layers ||
      placement->n_experts() != c.num_local_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the expert placement has ", placement->n_layers(), " layers of ", placement->n_experts(),
        " experts; the model has ", c.num_hidden_layers, " of ", c.num_local_experts));
  }
  std::unique_ptr<ExpertHost> host(new ExpertHost(weights, placement, backend, times));
  host->time_experts_ = time_experts;
  host->experts_.assign(weights->layers.size(),
                        std::vector<ExpertWeights>(static_cast<size_t>(c.num_local_experts)));
  MOE_RETURN_IF_ERROR(host->Upload(*weights, &host->experts_));
  return host;
}

absl::Status ExpertHost::Upload(const ModelWeights& source,
                                std::vector<std::vector<ExpertWeights>>* table) {
  const MixtralConfig& c = weights_->config;
  if (source.config.num_hidden_layers != c.num_hidden_layers ||
      source.config.num_local_experts != c.num_local_experts ||
      source.config.hidden_size != c.hidden_size ||
      source.config.intermediate_size != c.intermediate_size) {
    return absl::FailedPreconditionError("the checkpoint's shape changed since start-up");
  }
  // Every expert is held as the host's weights ask, whatever a later source (a re-placement's
  // mapping) was loaded with.
  const kernels::WeightFormat format = weights_->formats.experts;
  for (size_t l = 0; l < source.layers.size(); ++l) {
    const LayerWeights& layer = source.layers[l];
    for (size_t e = 0; e < layer.experts.size(); ++e) {
      if (!layer.owned[e] || Loaded(static_cast<int>(l), static_cast<int>(e))) continue;
      ExpertWeights& w = (*table)[l][e];
      MOE_ASSIGN_OR_RETURN(w.w1, UploadWeight(source, layer.experts[e].w1, backend_,
                                              kernels::WeightUse::kMatMul, format));
      MOE_ASSIGN_OR_RETURN(w.w2, UploadWeight(source, layer.experts[e].w2, backend_,
                                              kernels::WeightUse::kMatMul, format));
      MOE_ASSIGN_OR_RETURN(w.w3, UploadWeight(source, layer.experts[e].w3, backend_,
                                              kernels::WeightUse::kMatMul, format));
    }
  }
  return backend_->Sync();
}

void ExpertHost::Free(ExpertWeights* w) {
  for (kernels::WeightMatrix* m : {&w->w1, &w->w2, &w->w3}) {
    if (m->data != nullptr) backend_->FreeWeight(*m);
    *m = kernels::WeightMatrix{};
  }
}

int ExpertHost::LoadedCount() const {
  int n = 0;
  for (size_t l = 0; l < experts_.size(); ++l) {
    for (size_t e = 0; e < experts_[l].size(); ++e)
      n += Loaded(static_cast<int>(l), static_cast<int>(e));
  }
  return n;
}

absl::Status ExpertHost::Stage(std::unique_ptr<ModelWeights> source) {
  DropStaged();
  staged_.assign(experts_.size(),
                 std::vector<ExpertWeights>(experts_.empty() ? 0 : experts_[0].size()));
  absl::Status uploaded = Upload(*source, &staged_);
  staged_source_ = std::move(source);
  if (!uploaded.ok()) DropStaged();  // a half-loaded stage frees what it took
  return uploaded;
}

void ExpertHost::DropStaged() {
  for (auto& layer : staged_) {
    for (ExpertWeights& w : layer) Free(&w);
  }
  staged_.clear();
  staged_source_.reset();
}

void ExpertHost::Switch(const ExpertPlacement* next,
                        const std::function<bool(int layer, int expert)>& keep) {
  for (size_t l = 0; l < experts_.size(); ++l) {
    for (size_t e = 0; e < experts_[l].size(); ++e) {
      ExpertWeights& current = experts_[l][e];
      ExpertWeights* staged = staged_.empty() ? nullptr : &staged_[l][e];
      if (staged != nullptr && staged->w1.data != nullptr) {
        current = *staged;
        *staged = ExpertWeights{};
      }
      if (!keep(static_cast<int>(l), static_cast<int>(e))) Free(&current);
    }
  }
  staged_.clear();
  if (staged_source_ != nullptr) sources_.push_back(std::move(staged_source_));
  placement_ = next;
}

absl::Status ExpertHost::Prepare(const ExpertLayout& layout) {
  MOE_RETURN_IF_ERROR(ValidateLayout(layout, *placement_));
  const MixtralConfig& c = weights_->config;
  if (layout.hidden != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("expert layout rows of ", layout.hidden,
                                                   " floats; the model's hidden size is ",
                                                   c.hidden_size));
  }
  const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
  for (int s = 0; s < layout.n_slots(); ++s) {
    if (layout.rows_of(s) > 0 && !Loaded(layout.layer, slots[s].expert)) {
      return absl::FailedPreconditionError(absl::StrCat("layer ", layout.layer, " slot ", s,
                                                        " (expert ", slots[s].expert,
                                                        ") is not hosted here"));
    }
  }
  const int64_t n_rows = layout.n_rows(), inter = c.intermediate_size;
  if (!gate_.Reserve(n_rows * inter) || !up_.Reserve(n_rows * inter)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of ", backend_->Describe(), " memory for ", n_rows, " expert rows"));
  }
  return absl::OkStatus();
}

absl::Status ExpertHost::RunExperts(const ExpertLayout& layout, const float* x_all,
                                    float* out_all) {
  ScopedOpTimer timer(times_, Op::kExperts);
  MOE_RETURN_IF_ERROR(Prepare(layout));
  const MixtralConfig& c = weights_->config;
  const int64_t inter = c.intermediate_size, hidden = c.hidden_size;
  kernels::Backend* b = backend_;
  const bool host = b->host_memory();
  const std::vector<ExpertSlot>& slots = placement_->slots(layout.layer);
  slot_seconds_.assign(static_cast<size_t>(layout.n_slots()), 0.0);
  for (int s = 0; s < layout.n_slots(); ++s) {
    const int64_t begin = layout.slot_offsets[s], rows = layout.rows_of(s);
    if (rows == 0) continue;
    const auto start = std::chrono::steady_clock::now();
    const ExpertWeights& w = experts_[layout.layer][slots[s].expert];
    const float* x = x_all + begin * hidden;  // [rows, hidden]
    b->MatMul(x, rows, w.w1, gate_.data());   // [rows, inter]
    b->MatMul(x, rows, w.w3, up_.data());     // [rows, inter]
    b->SiluMul(gate_.data(), up_.data(), rows * inter, gate_.data());
    b->MatMul(gate_.data(), rows, w.w2, out_all + begin * hidden);  // [rows, hidden]
    // A device runs the slot asynchronously; waiting here makes the time the slot's own.
    if (!host && time_experts_) MOE_RETURN_IF_ERROR(b->Sync());
    slot_seconds_[s] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return b->Sync();
}

}  // namespace moe
