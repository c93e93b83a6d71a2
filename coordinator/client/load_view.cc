#include "coordinator/client/load_view.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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

// Wraps one line of prose to `width`, continuing on lines indented by four spaces: at a " | "
// between clauses where one lies in the line's second half, else after a comma, else at a space.
std::string Wrap(const std::string& line, int width) {
  const size_t limit = static_cast<size_t>(std::max(width, 20));
  std::string out, rest = line;
  while (rest.size() > limit) {
    const size_t bar = rest.rfind(" | ", limit - 3);
    const size_t comma = rest.rfind(", ", limit - 2);
    size_t end, next;  // this line is rest[0, end); the next one continues at rest[next]
    if (bar != std::string::npos && bar > limit / 2) {
      end = bar, next = bar + 3;
    } else if (comma != std::string::npos && comma > limit / 2) {
      end = comma + 1, next = comma + 2;
    } else {
      end = rest.rfind(' ', limit);
      if (end == std::string::npos || end <= 4) end = rest.find(' ', limit);
      if (end == std::string::npos) break;
      next = end + 1;
    }
    absl::StrAppend(&out, rest.substr(0, end), "\n");
    rest = absl::StrCat("    ", rest.substr(next));
  }
  return absl::StrCat(out, rest);
}

// How many columns of `cell` width fit beside a `lead`-wide first column (at least one).
int Fit(int width, int lead, int cell) { return std::max(1, (width - lead) / cell); }

}  // namespace

std::string RenderPlacement(const moe::v1::PlacementInfo& p, int n_workers, int n_experts, int width) {
  std::string out = absl::StrFormat("\nplacement epoch %u | %lld re-placements, %lld failed%s%s\n", p.epoch(),
                                    static_cast<long long>(p.rearrangements()),
                                    static_cast<long long>(p.failed_rearrangements()),
                                    p.expert_slots() > 0 ? absl::StrFormat(" | %d slots per worker", p.expert_slots()) : "",
                                    p.in_progress() ? " | loading a new placement" : "");
  if (p.has_last()) {
    const moe::v1::Rearrangement& r = p.last();
    if (r.ok()) {
      absl::StrAppend(&out, Wrap(absl::StrFormat("  last (%s, epoch %u): worker balancedness %.3f before, %.3f "
                                                 "predicted; %d slots moved, loaded in %.2f s, switch %.1f ms",
                                                 r.trigger(), r.epoch(), r.balancedness_before(),
                                                 r.predicted_balancedness(), r.moved_slots(), r.load_seconds(),
                                                 1e3 * r.switch_seconds()),
                                 width),
                      "\n");
    } else {
      absl::StrAppend(&out, Wrap(absl::StrFormat("  last (%s) FAILED, placement kept: %s", r.trigger(), r.error()), width),
                      "\n");
    }
  }
  // Per layer, each worker's experts; a replicated expert is marked with * on every rank holding it.
  // Workers in groups that fit the width.
  const int per_group = Fit(width, 5, 17);
  for (int first = 1; first <= n_workers; first += per_group) {
    const int last = std::min(n_workers, first + per_group - 1);
    absl::StrAppend(&out, first > 1 ? "\n" : "", "layer");
    for (int w = first; w <= last; ++w) absl::StrAppendFormat(&out, " | %-14s", absl::StrCat("worker ", w));
    absl::StrAppend(&out, "\n");
    for (int l = 0; l < p.layers_size(); ++l) {
      std::vector<int> copies(static_cast<size_t>(n_experts), 0);
      for (const moe::v1::Slot& slot : p.layers(l).slots()) {
        if (slot.expert() >= 0 && slot.expert() < n_experts) ++copies[slot.expert()];
      }
      absl::StrAppendFormat(&out, "%5d", l);
      for (int w = first; w <= last; ++w) {
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
  }
  return out;
}

std::string RenderLoadView(const moe::v1::LoadSnapshot& s, const LoadViewOptions& options) {
  std::string out = absl::StrCat(
      Wrap(absl::StrFormat("moe-cluster load | epoch %u | up %.0f s | since reset %.1f s | %lld steps, %lld tokens | %s",
                           s.epoch(), s.uptime_seconds(), s.seconds_since_reset(), static_cast<long long>(s.steps()),
                           static_cast<long long>(s.tokens()),
                           options.window ? absl::StrFormat("last %.0f s window", s.window_seconds()) : "since reset"),
           options.width),
      "\n");

  // Experts: each layer's share per expert, then its imbalance, locality and straggler cost: one
  // table where the width allows, else the shares (experts in groups) and the figures apart.
  struct LayerRow {
    std::string lead;                 // layer and tokens
    std::vector<std::string> shares;  // per expert
    std::string figures;              // balance, locality, workers
  };
  std::vector<LayerRow> rows;
  for (const moe::v1::LayerLoad& l : s.layers()) {
    LayerRow row;
    const auto& counts = options.window ? l.expert_window_tokens() : l.expert_tokens();
    const moe::v1::Imbalance& im = options.window ? l.expert_window_imbalance() : l.expert_imbalance();
    double total = 0;
    for (int64_t c : counts) total += static_cast<double>(c);
    row.lead = absl::StrFormat("%5d %7.0f ", l.layer(), total / std::max(1, s.top_k()));
    for (int64_t c : counts) row.shares.push_back(absl::StrCat(Percent(static_cast<double>(c), total), " "));
    const bool have = total > 0;
    row.figures = absl::StrFormat("| %s %s %s | %s  %s |", Figure("%4.2f", im.balancedness(), have, 4),
                                  Figure("%5.0f", 100 * im.imbalance_ratio(), have, 5),
                                  Figure("%5.2f", im.cv(), have, 5),
                                  Ratio(l.locality().first_choice_repeat_ratio(), l.locality().pairs() > 0),
                                  Ratio(l.locality().set_overlap_ratio(), l.locality().pairs() > 0));
    if (s.num_workers() > 0) {
      int64_t routed = 0;
      for (int64_t c : l.worker_tokens()) routed += c;
      absl::StrAppendFormat(&row.figures, " %s %7.1f ms",
                            Figure("%5.2f", l.worker_imbalance().balancedness(), routed > 0, 5),
                            1e3 * l.straggler_seconds());
    }
    rows.push_back(std::move(row));
  }
  const std::string figures_header =
      absl::StrCat("| bal   imb%   cv  | 1st-rep overlap |", s.num_workers() > 0 ? " w-bal straggler" : "");
  constexpr int kLead = 14, kShare = 7;  // "layer  tokens ", "100.0% "
  const int wide = kLead + kShare * s.num_experts() + static_cast<int>(figures_header.size()) + 3;
  auto expert_header = [&](int first, int last) {
    std::string h = "\nlayer  tokens ";
    for (int e = first; e < last; ++e) absl::StrAppendFormat(&h, "%6s ", absl::StrCat("e", e));
    return h;
  };
  if (wide <= options.width) {
    absl::StrAppend(&out, expert_header(0, s.num_experts()), figures_header, "\n");
    for (const LayerRow& r : rows) absl::StrAppend(&out, r.lead, absl::StrJoin(r.shares, ""), r.figures, "\n");
  } else {
    const int per_group = Fit(options.width, kLead, kShare);
    for (int first = 0; first < s.num_experts(); first += per_group) {
      const int last = std::min(s.num_experts(), first + per_group);
      absl::StrAppend(&out, expert_header(first, last), "\n");
      for (const LayerRow& r : rows) {
        absl::StrAppend(&out, r.lead);
        for (int e = first; e < last && e < static_cast<int>(r.shares.size()); ++e) absl::StrAppend(&out, r.shares[e]);
        absl::StrAppend(&out, "\n");
      }
    }
    absl::StrAppend(&out, "\nlayer ", figures_header, "\n");
    for (int i = 0; i < s.layers_size(); ++i) {
      absl::StrAppendFormat(&out, "%5d %s\n", s.layers(i).layer(), rows[static_cast<size_t>(i)].figures);
    }
  }
  const moe::v1::Imbalance& all = s.expert_imbalance();
  const bool any = s.tokens() > 0;
  std::string line = absl::StrFormat("  all experts (since reset): balancedness %s, imbalance ratio %s%%, CV %s",
                                     Figure("%.3f", all.balancedness(), any, 1),
                                     Figure("%.1f", 100 * all.imbalance_ratio(), any, 1), Figure("%.3f", all.cv(), any, 1));
  if (s.num_workers() > 0) {
    absl::StrAppendFormat(&line, " | workers: balancedness %s, imbalance ratio %s%%",
                          Figure("%.3f", s.worker_imbalance().balancedness(), any, 1),
                          Figure("%.1f", 100 * s.worker_imbalance().imbalance_ratio(), any, 1));
  }
  absl::StrAppend(&out, Wrap(line, options.width), "\n");
  const moe::v1::Locality& loc = s.locality();
  line = absl::StrFormat(
      "  temporal locality over %lld pairs: first choice repeats %s (chance %.1f%%), sets overlap %s (chance %.1f%%)",
      static_cast<long long>(loc.pairs()), Ratio(loc.first_choice_repeat_ratio(), loc.pairs() > 0),
      100 * loc.chance_first_choice(), Ratio(loc.set_overlap_ratio(), loc.pairs() > 0), 100 * loc.chance_set_overlap());
  absl::StrAppend(&out, Wrap(line, options.width), "\n");
  if (options.window) {
    const moe::v1::WindowLoad& w = s.window();
    line = absl::StrFormat("  in the window: %lld steps, %lld tokens, sets overlap %s", static_cast<long long>(w.steps()),
                           static_cast<long long>(w.tokens()),
                           Ratio(w.locality().set_overlap_ratio(), w.locality().pairs() > 0));
    if (s.num_workers() > 0) {
      absl::StrAppendFormat(&line, ", workers balancedness %s, straggler cost %.1f ms of %.1f ms",
                            Figure("%.3f", w.worker_imbalance().balancedness(), w.tokens() > 0, 1),
                            1e3 * w.straggler_seconds(), 1e3 * w.exchange_seconds());
    }
    absl::StrAppend(&out, Wrap(line, options.width), "\n");
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

  // Workers: the coordinator's dispatch count next to what each worker reports, and its times; in
  // two tables (counts and health, then times and traffic) where one does not fit.
  absl::StrAppend(&out, Wrap(absl::StrFormat("  straggler cost %.1f ms of %.1f ms in %lld exchanges",
                                             1e3 * s.straggler_seconds(), 1e3 * s.exchange_seconds(),
                                             static_cast<long long>(s.exchanges())),
                             options.width),
                  "\n\n");
  double routed_total = 0;
  for (const moe::v1::WorkerLoad& w : s.workers()) routed_total += static_cast<double>(w.routed_tokens());
  constexpr char kCounts[] = "worker host             routed  reported  share";
  constexpr char kTimes[] = "  compute s   wait s   idle s    MB in   MB out";
  const bool one_table = static_cast<int>(sizeof kCounts + sizeof kTimes + 12) <= options.width;
  absl::StrAppend(&out, kCounts, one_table ? kTimes : "", "  report\n");
  std::vector<std::string> times;
  for (const moe::v1::WorkerLoad& w : s.workers()) {
    const std::string health = w.seconds_since_report() < 0 ? "none yet"
                               : w.alive() ? absl::StrFormat("%.1f s ago", w.seconds_since_report())
                                           : absl::StrFormat("LOST %.0f s", w.seconds_since_report());
    const std::string counts = absl::StrFormat(
        "%6d %-15s %8lld %9lld %s", w.rank(), w.host().substr(0, 15), static_cast<long long>(w.routed_tokens()),
        static_cast<long long>(w.reported_tokens()), Percent(static_cast<double>(w.routed_tokens()), routed_total));
    const std::string time = absl::StrFormat(" %10.3f %8.3f %8.1f %8.2f %8.2f", w.compute_seconds(),
                                             w.exchange_wait_seconds(), w.idle_seconds(), w.bytes_in() / 1e6,
                                             w.bytes_out() / 1e6);
    absl::StrAppend(&out, counts, one_table ? time : "", "  ", health, "\n");
    times.push_back(absl::StrFormat("%6d%s", w.rank(), time));
  }
  if (!one_table) {
    absl::StrAppend(&out, "\nworker", kTimes, "\n");
    for (const std::string& t : times) absl::StrAppend(&out, t, "\n");
  }
  absl::StrAppend(&out, RenderPlacement(s.placement(), s.num_workers(), s.num_experts(), options.width));
  return out;
}

}  // namespace moe
