#include "coordinator/server/telemetry_proto.h"

namespace moe {
namespace {

void ImbalanceToProto(const LoadImbalance& in, moe::v1::Imbalance* out) {
  out->set_mean(in.mean);
  out->set_max(in.max);
  out->set_balancedness(in.balancedness);
  out->set_imbalance_ratio(in.imbalance_ratio);
  out->set_cv(in.cv);
}

void LocalityToProto(const RoutingLocality& in, moe::v1::Locality* out) {
  out->set_pairs(in.pairs);
  out->set_first_choice_repeats(in.first_choice_repeats);
  out->set_set_overlaps(in.set_overlaps);
  out->set_first_choice_repeat_ratio(in.first_choice_repeat_ratio);
  out->set_set_overlap_ratio(in.set_overlap_ratio);
  out->set_chance_first_choice(in.chance_first_choice);
  out->set_chance_set_overlap(in.chance_set_overlap);
}

void ExpertLoadToProto(const ExpertLoad& in, moe::v1::ExpertLoad* out) {
  out->set_layer(in.layer);
  out->set_expert(in.expert);
  out->set_tokens(in.tokens);
  out->set_busy_seconds(in.busy_seconds);
}

void LayerLoadToProto(const LayerLoad& in, moe::v1::LayerLoad* out) {
  out->set_layer(in.layer);
  out->mutable_expert_tokens()->Add(in.expert_tokens.begin(), in.expert_tokens.end());
  out->mutable_expert_window_tokens()->Add(in.expert_window_tokens.begin(),
                                           in.expert_window_tokens.end());
  out->mutable_worker_tokens()->Add(in.worker_tokens.begin(), in.worker_tokens.end());
  ImbalanceToProto(in.expert_imbalance, out->mutable_expert_imbalance());
  ImbalanceToProto(in.expert_window_imbalance, out->mutable_expert_window_imbalance());
  ImbalanceToProto(in.worker_imbalance, out->mutable_worker_imbalance());
  LocalityToProto(in.locality, out->mutable_locality());
  out->set_straggler_seconds(in.straggler_seconds);
}

void WorkerLoadToProto(const WorkerLoad& in, moe::v1::WorkerLoad* out) {
  out->set_rank(in.rank);
  out->set_routed_tokens(in.routed_tokens);
  out->set_alive(in.alive);
  out->set_seconds_since_report(in.seconds_since_report);
  out->set_reports(in.reports);
  out->set_reported_tokens(in.reported_tokens);
  out->set_exchanges(in.exchanges);
  out->set_compute_seconds(in.compute_seconds);
  out->set_exchange_wait_seconds(in.exchange_wait_seconds);
  out->set_idle_seconds(in.idle_seconds);
  out->set_bytes_in(in.bytes_in);
  out->set_bytes_out(in.bytes_out);
  for (const ExpertLoad& e : in.experts) ExpertLoadToProto(e, out->add_experts());
  out->set_host(in.host);
  out->set_placement_epoch(in.placement_epoch);
}

void PlacementInfoToProto(const PlacementInfo& in, moe::v1::PlacementInfo* out) {
  out->set_epoch(in.epoch);
  out->set_expert_slots(in.expert_slots);
  for (size_t l = 0; l < in.slots.size(); ++l) {
    SlotsToProto(in.slots[l], out->add_layers());
  }
  out->set_rearrangements(in.rearrangements);
  out->set_failed_rearrangements(in.failed_rearrangements);
  out->set_in_progress(in.in_progress);
  if (in.has_last) RearrangementToProto(in.last, out->mutable_last());
}

void LabelLoadToProto(const LabelLoad& in, moe::v1::LabelLoad* out) {
  out->set_label(in.label);
  out->set_requests(in.requests);
  out->set_prompt_tokens(in.prompt_tokens);
  out->set_generated_tokens(in.generated_tokens);
  out->mutable_expert_tokens()->Add(in.expert_tokens.begin(), in.expert_tokens.end());
}

void WindowLoadToProto(const WindowLoad& in, moe::v1::WindowLoad* out) {
  out->set_steps(in.steps);
  out->set_tokens(in.tokens);
  LocalityToProto(in.locality, out->mutable_locality());
  ImbalanceToProto(in.worker_imbalance, out->mutable_worker_imbalance());
  out->set_straggler_seconds(in.straggler_seconds);
  out->set_exchange_seconds(in.exchange_seconds);
  out->set_exchanges(in.exchanges);
}

}  // namespace

void SlotsToProto(const std::vector<ExpertSlot>& slots, moe::v1::LayerSlots* out) {
  for (const ExpertSlot& slot : slots) {
    moe::v1::Slot* s = out->add_slots();
    s->set_rank(slot.rank);
    s->set_expert(slot.expert);
  }
}

void RearrangementToProto(const Rearrangement& in, moe::v1::Rearrangement* out) {
  out->set_ok(in.ok);
  out->set_error(in.error);
  out->set_trigger(in.trigger);
  out->set_epoch(in.epoch);
  out->set_balancedness_before(in.balancedness_before);
  out->set_planned_from_balancedness(in.planned_from_balancedness);
  out->set_predicted_balancedness(in.predicted_balancedness);
  out->set_moved_slots(in.moved_slots);
  out->set_experts_loaded(in.experts_loaded);
  out->set_load_seconds(in.load_seconds);
  out->set_switch_seconds(in.switch_seconds);
  out->set_total_seconds(in.total_seconds);
}

moe::v1::LoadSnapshot LoadSnapshotToProto(const LoadSnapshot& in) {
  moe::v1::LoadSnapshot out;
  out.set_epoch(in.epoch);
  out.set_uptime_seconds(in.uptime_seconds);
  out.set_seconds_since_reset(in.seconds_since_reset);
  out.set_window_seconds(in.window_seconds);
  out.set_num_layers(in.num_layers);
  out.set_num_experts(in.num_experts);
  out.set_top_k(in.top_k);
  out.set_num_workers(in.num_workers);
  out.set_steps(in.steps);
  out.set_tokens(in.tokens);
  for (const LayerLoad& l : in.layers) LayerLoadToProto(l, out.add_layers());
  ImbalanceToProto(in.expert_imbalance, out.mutable_expert_imbalance());
  ImbalanceToProto(in.worker_imbalance, out.mutable_worker_imbalance());
  LocalityToProto(in.locality, out.mutable_locality());
  for (const WorkerLoad& w : in.workers) WorkerLoadToProto(w, out.add_workers());
  out.set_straggler_seconds(in.straggler_seconds);
  out.set_exchange_seconds(in.exchange_seconds);
  out.set_exchanges(in.exchanges);
  PlacementInfoToProto(in.placement, out.mutable_placement());
  for (const LabelLoad& l : in.labels) LabelLoadToProto(l, out.add_labels());
  WindowLoadToProto(in.window, out.mutable_window());
  return out;
}

WorkerReport WorkerReportFromProto(const moe::v1::WorkerReport& in) {
  WorkerReport out;
  out.rank = in.rank();
  out.epoch = in.epoch();
  out.sequence = in.sequence();
  out.host = in.host();
  out.exchanges = in.exchanges();
  out.last_step_id = in.last_step_id();
  out.compute_seconds = in.compute_seconds();
  out.exchange_wait_seconds = in.exchange_wait_seconds();
  out.idle_seconds = in.idle_seconds();
  out.bytes_in = in.bytes_in();
  out.bytes_out = in.bytes_out();
  out.placement_epoch = in.placement_epoch();
  out.experts.reserve(static_cast<size_t>(in.experts_size()));
  for (const moe::v1::ExpertLoad& e : in.experts()) {
    out.experts.push_back(ExpertLoad{e.layer(), e.expert(), e.tokens(), e.busy_seconds()});
  }
  return out;
}

}  // namespace moe
