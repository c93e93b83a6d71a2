#include "coordinator/client/load_view.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {
namespace {

std::string Percent(double part, double whole) {
  return whole > 0 ? absl::StrFormat("%5.1f%%", 100.0 * part / whole) : std::string("     -");
}

std::string Ratio(double x, bool have) { return have ? absl::StrFormat("%5.1f%%", 100.0 * x) : "     -"; }

// A figure, or "-" right-aligned in its width where there is nothing to measure yet: an idle
// server's balancedness is not a perfect 1.00, it is unknown.
std::string Figure(const absl::FormatSpec<double>& format, double x, bool have, int width) {
  return have ? absl::StrFormat(format, x) : absl::StrCat(std::string(static_cast<size_t>(width - 1), ' '), "-");
}

}  // namespace

std::string RenderPlacement(const moe::v1::PlacementInfo& p, int n_workers, int n_experts) {
  std::string out = absl::StrFormat("\nplacement epoch %u | %lld re-placements, %lld failed%s%s\n", p.epoch(),
                                    static_cast<long long>(p.rearrangements()),
                                    static_cast<long long>(p.failed_rearrangements()),
                                    p.expert_slots() > 0 ? absl::StrFormat(" | %d slots per worker", p.expert_slots()) : "",
                                    p.in_progress() ? " | loading a new placement" : "");
  if (p.has_last()) {
    const moe::v1::Rearrangement& r = p.last();
    if (r.ok()) {
      absl::StrAppendFormat(&out,
                            "  last (%s, epoch %u): worker balancedness %.3f before, %.3f predicted; %d slots "
                            "moved, loaded in %.2f s, switch %.1f ms\n",
                            r.trigger(), r.epoch(), r.balancedness_before(), r.predicted_balancedness(),
                            r.moved_slots(), r.load_seconds(), 1e3 * r.switch_seconds());
    } else {
      absl::StrAppendFormat(&out, "  last (%s) FAILED, placement kept: %s\n", r.trigger(), r.error());
    }
  }
  // Per layer, each worker's experts; a replicated expert is marked with * on every rank holding it.
  absl::StrAppend(&out, "layer");
  for (int w = 1; w <= n_workers; ++w) absl::StrAppendFormat(&out, " | %-14s", absl::StrCat("worker ", w));
  absl::StrAppend(&out, "\n");
  for (int l = 0; l < p.layers_size(); ++l) {
    std::vector<int> copies(static_cast<size_t>(n_experts), 0);
    for (const moe::v1::Slot& slot : p.layers(l).slots()) {
      if (slot.expert() >= 0 && slot.expert() < n_experts) ++copies[slot.expert()];
    }
    absl::StrAppendFormat(&out, "%5d", l);
    for (int w = 1; w <= n_workers; ++w) {
      std::string experts;
      for (const moe::v1::Slot& slot : p.layers(l).slots()) {
        if (slot.rank() != w) continue;
        absl::StrAppend(&experts, experts.empty() ? "" : ",", slot.expert(),
                        slot.expert() >= 0 && slot.expert() < n_experts && copies[slot.expert()] > 1 ? "*" : "");
      }
      absl::StrAppendFormat(&out, " | %-14s", experts);
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string RenderLoadView(const moe::v1::LoadSnapshot& s, const LoadViewOptions& options) {
  std::string out = absl::StrFormat(
      "moe-cluster load | epoch %u | up %.0f s | since reset %.1f s | %lld steps, %lld tokens | %s\n",
      s.epoch(), s.uptime_seconds(), s.seconds_since_reset(), static_cast<long long>(s.steps()),
      static_cast<long long>(s.tokens()),
      options.window ? absl::StrFormat("last %.0f s window", s.window_seconds()) : "since reset");

  // Experts: each layer's share per expert, its imbalance, locality and straggler cost.
  absl::StrAppend(&out, "\nlayer  tokens ");
  for (int e = 0; e < s.num_experts(); ++e) absl::StrAppendFormat(&out, "%6s ", absl::StrCat("e", e));
  absl::StrAppend(&out, "| bal   imb%   cv  | 1st-rep overlap |", s.num_workers() > 0 ? " w-bal straggler" : "",
                  "\n");
  for (const moe::v1::LayerLoad& l : s.layers()) {
    const auto& counts = options.window ? l.expert_window_tokens() : l.expert_tokens();
    const moe::v1::Imbalance& im = options.window ? l.expert_window_imbalance() : l.expert_imbalance();
    double total = 0;
    for (int64_t c : counts) total += static_cast<double>(c);
    absl::StrAppendFormat(&out, "%5d %7.0f ", l.layer(), total / std::max(1, s.top_k()));
    for (int64_t c : counts) absl::StrAppend(&out, Percent(static_cast<double>(c), total), " ");
    const bool have = total > 0;
    absl::StrAppendFormat(&out, "| %s %s %s | %s  %s |", Figure("%4.2f", im.balancedness(), have, 4),
                          Figure("%5.0f", 100 * im.imbalance_ratio(), have, 5), Figure("%5.2f", im.cv(), have, 5),
                          Ratio(l.locality().first_choice_repeat_ratio(), l.locality().pairs() > 0),
                          Ratio(l.locality().set_overlap_ratio(), l.locality().pairs() > 0));
    if (s.num_workers() > 0) {
      int64_t routed = 0;
      for (int64_t c : l.worker_tokens()) routed += c;
      absl::StrAppendFormat(&out, " %s %7.1f ms", Figure("%5.2f", l.worker_imbalance().balancedness(), routed > 0, 5),
                            1e3 * l.straggler_seconds());
    }
    absl::StrAppend(&out, "\n");
  }
  const moe::v1::Imbalance& all = s.expert_imbalance();
  const bool any = s.tokens() > 0;
  absl::StrAppendFormat(&out, "  all experts (since reset): balancedness %s, imbalance ratio %s%%, CV %s",
                        Figure("%.3f", all.balancedness(), any, 1), Figure("%.1f", 100 * all.imbalance_ratio(), any, 1),
                        Figure("%.3f", all.cv(), any, 1));
  if (s.num_workers() > 0) {
    absl::StrAppendFormat(&out, " | workers: balancedness %s, imbalance ratio %s%%",
                          Figure("%.3f", s.worker_imbalance().balancedness(), any, 1),
                          Figure("%.1f", 100 * s.worker_imbalance().imbalance_ratio(), any, 1));
  }
  const moe::v1::Locality& loc = s.locality();
  absl::StrAppendFormat(&out,
                        "\n  temporal locality over %lld pairs: first choice repeats %s (chance %.1f%%), "
                        "sets overlap %s (chance %.1f%%)\n",
                        static_cast<long long>(loc.pairs()), Ratio(loc.first_choice_repeat_ratio(), loc.pairs() > 0),
                        100 * loc.chance_first_choice(), Ratio(loc.set_overlap_ratio(), loc.pairs() > 0),
                        100 * loc.chance_set_overlap());
  if (options.window) {
    const moe::v1::WindowLoad& w = s.window();
    absl::StrAppendFormat(&out, "  in the window: %lld steps, %lld tokens, sets overlap %s",
                          static_cast<long long>(w.steps()), static_cast<long long>(w.tokens()),
                          Ratio(w.locality().set_overlap_ratio(), w.locality().pairs() > 0));
    if (s.num_workers() > 0) {
      absl::StrAppendFormat(&out, ", workers balancedness %s, straggler cost %.1f ms of %.1f ms",
                            Figure("%.3f", w.worker_imbalance().balancedness(), w.tokens() > 0, 1),
                            1e3 * w.straggler_seconds(),
                            1e3 * w.exchange_seconds());
    }
    absl::StrAppend(&out, "\n");
  }
  if (s.labels_size() > 0) {
    // Per workload label (GenerateRequest.label), since reset.
    absl::StrAppend(&out, "\nlabel                 requests   prompt  generated\n");
    for (const moe::v1::LabelLoad& l : s.labels()) {
      absl::StrAppendFormat(&out, "%-20s %9lld %8lld %10lld\n", l.label().empty() ? "(none)" : l.label(),
                            static_cast<long long>(l.requests()), static_cast<long long>(l.prompt_tokens()),
                            static_cast<long long>(l.generated_tokens()));
    }
  }
  if (s.num_workers() == 0) return out;

  // Workers: the coordinator's dispatch count next to what each worker reports, and its times.
  absl::StrAppendFormat(&out, "  straggler cost %.1f ms of %.1f ms in %lld exchanges\n\n",
                        1e3 * s.straggler_seconds(), 1e3 * s.exchange_seconds(),
                        static_cast<long long>(s.exchanges()));
  absl::StrAppend(&out,
                  "worker host             routed  reported  share  compute s   wait s   idle s    MB in   MB out  report\n");
  double routed_total = 0;
  for (const moe::v1::WorkerLoad& w : s.workers()) routed_total += static_cast<double>(w.routed_tokens());
  for (const moe::v1::WorkerLoad& w : s.workers()) {
    const std::string health = w.seconds_since_report() < 0 ? "none yet"
                               : w.alive() ? absl::StrFormat("%.1f s ago", w.seconds_since_report())
                                           : absl::StrFormat("LOST %.0f s", w.seconds_since_report());
    absl::StrAppendFormat(&out, "%6d %-15s %8lld %9lld %s %10.3f %8.3f %8.1f %8.2f %8.2f  %s\n", w.rank(),
                          w.host().substr(0, 15), static_cast<long long>(w.routed_tokens()),
                          static_cast<long long>(w.reported_tokens()),
                          Percent(static_cast<double>(w.routed_tokens()), routed_total), w.compute_seconds(),
                          w.exchange_wait_seconds(), w.idle_seconds(), w.bytes_in() / 1e6, w.bytes_out() / 1e6,
                          health);
  }
  absl::StrAppend(&out, RenderPlacement(s.placement(), s.num_workers(), s.num_experts()));
  return out;
}

}  // namespace moe
