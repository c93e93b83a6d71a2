#include "worker/load_recorder.h"

namespace moe {

LoadRecorder::LoadRecorder(int rank, std::string host, const ExpertPlacement* placement)
    : rank_(rank), host_(std::move(host)), n_experts_(placement->n_experts()) {
  absl::MutexLock lock(&mu_);
  IndexLocked(*placement);
  ZeroLocked();
}

void LoadRecorder::IndexLocked(const ExpertPlacement& placement) {
  hosted_.clear();
  slot_.assign(static_cast<size_t>(placement.n_layers()) * n_experts_, -1);
  for (int l = 0; l < placement.n_layers(); ++l) {
    for (int e = 0; e < n_experts_; ++e) {
      if (!placement.Owns(rank_, l, e)) continue;
      slot_[static_cast<size_t>(l) * n_experts_ + e] = static_cast<int>(hosted_.size());
      hosted_.emplace_back(l, e);
    }
  }
}

void LoadRecorder::OnPlacementChanged(const ExpertPlacement& placement, uint32_t epoch) {
  absl::MutexLock lock(&mu_);
  placement_epoch_ = epoch;
  IndexLocked(placement);
  ZeroLocked();
}

void LoadRecorder::ZeroLocked() {
  totals_ = WorkerReport{};
  for (const auto& [layer, expert] : hosted_) totals_.experts.push_back(ExpertLoad{layer, expert, 0, 0.0});
}

void LoadRecorder::OnWorkerStep(const WorkerStepRecord& r) {
  absl::MutexLock lock(&mu_);
  if (r.epoch != epoch_) {
    epoch_ = r.epoch;
    ZeroLocked();
  }
  ++totals_.exchanges;
  totals_.last_step_id = r.step_id;
  totals_.compute_seconds += r.compute_seconds;
  totals_.exchange_wait_seconds += r.wait_seconds;
  totals_.idle_seconds += r.idle_seconds;
  totals_.bytes_in += r.bytes_in;
  totals_.bytes_out += r.bytes_out;
  for (int e = 0; e < n_experts_ && e < static_cast<int>(r.expert_rows.size()); ++e) {
    if (r.expert_rows[e] == 0) continue;
    const int slot = slot_[static_cast<size_t>(r.layer) * n_experts_ + e];
    if (slot < 0) continue;  // ServeExperts has already refused rows for experts not hosted
    ExpertLoad& load = totals_.experts[static_cast<size_t>(slot)];
    load.tokens += r.expert_rows[e];
    if (!r.expert_seconds.empty()) load.busy_seconds += r.expert_seconds[e];
  }
}

WorkerReport LoadRecorder::NextReport() {
  absl::MutexLock lock(&mu_);
  WorkerReport report = totals_;
  report.rank = rank_;
  report.host = host_;
  report.epoch = epoch_;
  report.sequence = ++sequence_;
  report.placement_epoch = placement_epoch_;
  return report;
}

}  // namespace moe
