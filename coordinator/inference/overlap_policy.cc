#include "coordinator/inference/overlap_policy.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {

double OverlapChooser::Way::Median() const {
  const int n = std::min(count, kWindow);
  if (n == 0) return 0;
  std::vector<double> sorted(per_token.begin(), per_token.begin() + n);
  std::sort(sorted.begin(), sorted.end());
  return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

OverlapChooser::Key OverlapChooser::KeyOf(int64_t tokens, bool decode) {
  int log2 = 0;
  while ((tokens >> (log2 + 1)) > 0) ++log2;
  return {decode, log2};
}

bool OverlapChooser::Split(int64_t tokens, bool decode) {
  switch (policy_.mode) {
    case OverlapPolicy::Mode::kOff:
      return false;
    case OverlapPolicy::Mode::kOn:
      return true;
    case OverlapPolicy::Mode::kAuto:
      break;
  }
  if (tokens < policy_.min_tokens) return false;
  Kind& kind = kinds_[KeyOf(tokens, decode)];
  const int64_t step = kind.steps++;
  // Trials first, alternating (whole first) so that both ways see the same stretch of load.
  if (!Decided(kind)) return kind.way[1].count < kind.way[0].count;
  const bool split_faster = kind.way[1].Median() < kind.way[0].Median();
  if (policy_.probe_every <= 0) return split_faster;
  // Probes of the other way: after probe_every steps, then, while the choice stands, at twice the
  // previous interval (up to 8x), so that a settled choice costs next to nothing; a new choice
  // starts the intervals again.
  if (kind.probe_interval == 0 || split_faster != kind.split_chosen) {
    kind.split_chosen = split_faster;
    kind.probe_interval = policy_.probe_every;
    kind.next_probe = step + kind.probe_interval;
  }
  if (step < kind.next_probe) return split_faster;
  kind.probe_interval =
      std::min<int64_t>(2 * kind.probe_interval, int64_t{8} * policy_.probe_every);
  kind.next_probe = step + kind.probe_interval;
  return !split_faster;
}

bool OverlapChooser::Decided(const Kind& kind) const {
  const int tried = std::min(kind.way[0].count, kind.way[1].count);
  if (tried >= policy_.trials) return true;
  // A clear difference after two steps each way ends the trials early: on a machine where
  // splitting loses, each trial costs most of a step.
  if (tried < 2) return false;
  const double whole = kind.way[0].Median(), split = kind.way[1].Median();
  return std::max(whole, split) > kClearRatio * std::min(whole, split);
}

void OverlapChooser::Record(int64_t tokens, bool decode, bool split, double seconds) {
  if (policy_.mode != OverlapPolicy::Mode::kAuto || tokens < policy_.min_tokens || tokens < 1)
    return;
  Way& way = kinds_[KeyOf(tokens, decode)].way[split ? 1 : 0];
  way.per_token[static_cast<size_t>(way.count % kWindow)] = seconds / static_cast<double>(tokens);
  ++way.count;
}

std::string OverlapChooser::Describe() const {
  std::string out;
  for (const auto& [key, kind] : kinds_) {
    const int64_t low = int64_t{1} << key.second;
    absl::StrAppendFormat(&out, "%s %d-%d tokens:", key.first ? "decode" : "prefill", low,
                          2 * low - 1);
    for (int w = 0; w < 2; ++w) {
      const Way& way = kind.way[w];
      absl::StrAppend(&out, w == 0 ? " whole " : ", split ");
      if (way.count == 0) {
        absl::StrAppend(&out, "untried");
      } else {
        absl::StrAppendFormat(&out, "%.3f ms/token (%d)", 1e3 * way.Median(), way.count);
      }
    }
    absl::StrAppend(&out, " -> ",
                    !Decided(kind)                                ? "trying both"
                    : kind.way[1].Median() < kind.way[0].Median() ? "split"
                                                                  : "whole",
                    "\n");
  }
  return out;
}

}  // namespace moe
