#include "coordinator/telemetry/load_metrics.h"

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// The three imbalance figures of one set of loads, under the labels given.
void ImbalanceSamples(const LoadImbalance& x, const std::string& scope, const std::string& layer,
                      PrometheusText* balancedness, PrometheusText* ratio, PrometheusText* cv) {
  balancedness->Sample("moe_balancedness", {{"scope", scope}, {"layer", layer}}, x.balancedness);
  ratio->Sample("moe_imbalance_ratio", {{"scope", scope}, {"layer", layer}}, x.imbalance_ratio);
  cv->Sample("moe_load_cv", {{"scope", scope}, {"layer", layer}}, x.cv);
}

}  // namespace

void RenderLoadMetrics(const LoadSnapshot& s, PrometheusText* out) {
  // Steps and tokens as counters come from the scheduler (they must not restart at ResetLoad).
  // Counters (*_total) come from s.lifetime: ResetLoad starts the snapshot's figures afresh, not
  // these. What a reset starts afresh is in GetLoad and in the gauges.
  const LoadCounters& total = s.lifetime;
  out->Family("moe_expert_tokens_total", "counter",
              "Token-choices routed to each expert (a top-k token counts once per chosen expert).");
  for (size_t l = 0; l < total.expert_tokens.size(); ++l) {
    for (size_t e = 0; e < total.expert_tokens[l].size(); ++e) {
      out->Sample("moe_expert_tokens_total",
                  {{"layer", absl::StrCat(l)}, {"expert", absl::StrCat(e)}},
                  static_cast<double>(total.expert_tokens[l][e]));
    }
  }
  out->Family("moe_expert_window_tokens", "gauge",
              "Token-choices routed to each expert over the sliding window (--load-window-s).");
  for (const LayerLoad& l : s.layers) {
    for (size_t e = 0; e < l.expert_window_tokens.size(); ++e) {
      out->Sample("moe_expert_window_tokens", {{"layer", absl::StrCat(l.layer)}, {"expert", absl::StrCat(e)}},
                  static_cast<double>(l.expert_window_tokens[e]));
    }
  }

  // Imbalance: scope experts / experts_window / workers; layer "all" is over every layer. Three
  // families filled in one pass, each kept contiguous as the format requires.
  PrometheusText balancedness, ratio, cv;
  balancedness.Family("moe_balancedness", "gauge", "Load balancedness mean/max (1 = perfect), per layer and over all layers.");
  ratio.Family("moe_imbalance_ratio", "gauge", "Load imbalance ratio (max - mean)/mean (0 = perfect).");
  cv.Family("moe_load_cv", "gauge", "Coefficient of variation of the load (0 = perfect).");
  for (const LayerLoad& l : s.layers) {
    const std::string layer = absl::StrCat(l.layer);
    ImbalanceSamples(l.expert_imbalance, "experts", layer, &balancedness, &ratio, &cv);
    ImbalanceSamples(l.expert_window_imbalance, "experts_window", layer, &balancedness, &ratio, &cv);
    if (s.num_workers > 0) ImbalanceSamples(l.worker_imbalance, "workers", layer, &balancedness, &ratio, &cv);
  }
  ImbalanceSamples(s.expert_imbalance, "experts", "all", &balancedness, &ratio, &cv);
  if (s.num_workers > 0) {
    ImbalanceSamples(s.worker_imbalance, "workers", "all", &balancedness, &ratio, &cv);
    ImbalanceSamples(s.window.worker_imbalance, "workers_window", "all", &balancedness, &ratio, &cv);
  }
  out->Append(balancedness);
  out->Append(ratio);
  out->Append(cv);

  out->Family("moe_locality_pairs_total", "counter", "Consecutive token pairs (same sequence) compared for temporal locality.");
  for (size_t l = 0; l < total.locality_pairs.size(); ++l) {
    out->Sample("moe_locality_pairs_total", {{"layer", absl::StrCat(l)}},
                static_cast<double>(total.locality_pairs[l]));
  }
  out->Family("moe_locality_ratio", "gauge",
              "Temporal locality: share of consecutive token pairs whose first choice repeats "
              "(kind=first_choice) or whose expert sets overlap (kind=set_overlap); layer \"all\" pools the layers.");
  auto locality = [&](const RoutingLocality& x, const std::string& layer) {
    out->Sample("moe_locality_ratio", {{"layer", layer}, {"kind", "first_choice"}}, x.first_choice_repeat_ratio);
    out->Sample("moe_locality_ratio", {{"layer", layer}, {"kind", "set_overlap"}}, x.set_overlap_ratio);
  };
  for (const LayerLoad& l : s.layers) locality(l.locality, absl::StrCat(l.layer));
  locality(s.locality, "all");
  out->Family("moe_locality_chance_ratio", "gauge", "What uniform random routing gives for moe_locality_ratio.");
  out->Sample("moe_locality_chance_ratio", {{"kind", "first_choice"}}, s.locality.chance_first_choice);
  out->Sample("moe_locality_chance_ratio", {{"kind", "set_overlap"}}, s.locality.chance_set_overlap);

  // The sliding window (--load-window-s): the same buckets as moe_expert_window_tokens.
  out->Family("moe_window_steps", "gauge", "Forward steps in the sliding window (--load-window-s).");
  out->Sample("moe_window_steps", static_cast<double>(s.window.steps));
  out->Family("moe_window_tokens", "gauge", "Tokens through the model in the sliding window.");
  out->Sample("moe_window_tokens", static_cast<double>(s.window.tokens));
  out->Family("moe_window_locality_ratio", "gauge",
              "moe_locality_ratio{layer=\"all\"} over the sliding window.");
  const RoutingLocality& window_locality = s.window.locality;
  out->Sample("moe_window_locality_ratio", {{"kind", "first_choice"}}, window_locality.first_choice_repeat_ratio);
  out->Sample("moe_window_locality_ratio", {{"kind", "set_overlap"}}, window_locality.set_overlap_ratio);

  // Per workload label (GenerateRequest.label; "" for none, "(other)" past the server's bound).
  struct LabelFamily {
    const char* name;
    const char* help;
    int64_t LabelLoad::*value;
  };
  const LabelFamily label_families[] = {
      {"moe_label_requests_total", "Requests admitted, by workload label.", &LabelLoad::requests},
      {"moe_label_prompt_tokens_total", "Prompt tokens of those requests, by workload label.",
       &LabelLoad::prompt_tokens},
      {"moe_label_generated_tokens_total", "Tokens routed while decoding, by workload label.",
       &LabelLoad::generated_tokens},
  };
  for (const LabelFamily& f : label_families) {
    out->Family(f.name, "counter", f.help);
    for (const LabelLoad& l : total.labels) {
      out->Sample(f.name, {{"label", l.label}}, static_cast<double>(l.*f.value));
    }
  }

  if (s.num_workers == 0) return;
  out->Family("moe_straggler_seconds_total", "counter",
              "Per exchange, the slowest worker's expert time minus the mean over workers, summed.");
  for (size_t l = 0; l < total.straggler_seconds.size(); ++l) {
    out->Sample("moe_straggler_seconds_total", {{"layer", absl::StrCat(l)}},
                total.straggler_seconds[l]);
  }
  out->Family("moe_exchange_seconds_total", "counter", "Coordinator wall time inside expert exchanges.");
  out->Sample("moe_exchange_seconds_total", total.exchange_seconds);
  out->Family("moe_exchanges_total", "counter", "Expert exchanges (one per layer per step).");
  out->Sample("moe_exchanges_total", static_cast<double>(total.exchanges));
  out->Family("moe_window_straggler_seconds", "gauge",
              "moe_straggler_seconds_total over the sliding window, all layers.");
  out->Sample("moe_window_straggler_seconds", s.window.straggler_seconds);
  out->Family("moe_window_exchange_seconds", "gauge", "moe_exchange_seconds_total over the sliding window.");
  out->Sample("moe_window_exchange_seconds", s.window.exchange_seconds);
  out->Family("moe_window_exchanges", "gauge", "Expert exchanges in the sliding window.");
  out->Sample("moe_window_exchanges", static_cast<double>(s.window.exchanges));

  struct WorkerFamily {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const WorkerLoad&);
  };
  const WorkerFamily families[] = {
      {"moe_worker_routed_tokens_total", "counter", "Token-choices the coordinator sent to the worker.",
       [](const WorkerLoad& w) { return static_cast<double>(w.routed_tokens); }},
      {"moe_worker_reported_tokens_total", "counter", "Rows the worker reports it ran through its experts.",
       [](const WorkerLoad& w) { return static_cast<double>(w.reported_tokens); }},
      {"moe_worker_compute_seconds_total", "counter", "Worker time running experts.",
       [](const WorkerLoad& w) { return w.compute_seconds; }},
      {"moe_worker_exchange_wait_seconds_total", "counter", "Worker time inside steps waiting for rows or for outputs to leave.",
       [](const WorkerLoad& w) { return w.exchange_wait_seconds; }},
      {"moe_worker_idle_seconds_total", "counter", "Worker time between steps.",
       [](const WorkerLoad& w) { return w.idle_seconds; }},
      {"moe_worker_received_bytes_total", "counter", "Dispatch bytes the worker received.",
       [](const WorkerLoad& w) { return static_cast<double>(w.bytes_in); }},
      {"moe_worker_sent_bytes_total", "counter", "Output bytes the worker sent back.",
       [](const WorkerLoad& w) { return static_cast<double>(w.bytes_out); }},
      {"moe_worker_up", "gauge", "1 if the worker's last telemetry report is recent (3 intervals, at least 1 s).",
       [](const WorkerLoad& w) { return w.alive ? 1.0 : 0.0; }},
      {"moe_worker_seconds_since_report", "gauge", "Age of the worker's last telemetry report (-1: none yet).",
       [](const WorkerLoad& w) { return w.seconds_since_report; }},
  };
  for (const WorkerFamily& f : families) {
    out->Family(f.name, f.type, f.help);
    const bool counter = std::string_view(f.type) == "counter";
    for (const WorkerLoad& w : counter ? total.workers : s.workers) {
      out->Sample(f.name, {{"worker", absl::StrCat(w.rank)}}, f.value(w));
    }
  }
  if (s.num_workers == 0) return;

  // Live re-placement: not reset by ResetLoad.
  const PlacementInfo& p = s.placement;
  out->Family("moe_placement_epoch", "gauge", "The expert placement in force: 1 at start-up, +1 per re-placement.");
  out->Sample("moe_placement_epoch", p.epoch);
  int64_t slots = 0;
  for (const auto& layer : p.slots) slots += static_cast<int64_t>(layer.size());
  out->Family("moe_placement_slots", "gauge", "Expert slots in the placement in force, all layers (experts plus replicas).");
  out->Sample("moe_placement_slots", static_cast<double>(slots));
  out->Family("moe_rearrangements_total", "counter", "Live re-placements, by result (failed ones kept the old placement).");
  out->Sample("moe_rearrangements_total", {{"result", "ok"}}, static_cast<double>(p.rearrangements));
  out->Sample("moe_rearrangements_total", {{"result", "failed"}}, static_cast<double>(p.failed_rearrangements));
  out->Family("moe_rearrangement_in_progress", "gauge", "1 while workers load a new placement.");
  out->Sample("moe_rearrangement_in_progress", p.in_progress ? 1.0 : 0.0);
  if (!p.has_last) return;
  const Rearrangement& r = p.last;
  out->Family("moe_last_rearrangement_seconds", "gauge",
              "The latest re-placement's times: background load (slowest worker), the switch (the only pause), total.");
  out->Sample("moe_last_rearrangement_seconds", {{"phase", "load"}}, r.load_seconds);
  out->Sample("moe_last_rearrangement_seconds", {{"phase", "switch"}}, r.switch_seconds);
  out->Sample("moe_last_rearrangement_seconds", {{"phase", "total"}}, r.total_seconds);
  out->Family("moe_last_rearrangement_balancedness", "gauge",
              "Worker balancedness around the latest re-placement: measured before it, and predicted for its plan "
              "(after it: moe_balancedness{scope=\"workers\"}).");
  out->Sample("moe_last_rearrangement_balancedness", {{"when", "before"}}, r.balancedness_before);
  out->Sample("moe_last_rearrangement_balancedness", {{"when", "predicted"}}, r.predicted_balancedness);
  out->Family("moe_last_rearrangement_moved_slots", "gauge", "Expert slots the latest re-placement moved.");
  out->Sample("moe_last_rearrangement_moved_slots", r.moved_slots);
}

}  // namespace moe
