#include "coordinator/telemetry/imbalance.h"

#include <algorithm>
#include <cmath>

namespace moe {
namespace {

LoadImbalance FromMoments(double mean, double max, double cv) {
  LoadImbalance out;
  out.mean = mean;
  out.max = max;
  out.balancedness = max > 0 ? mean / max : 1.0;
  out.imbalance_ratio = mean > 0 ? (max - mean) / mean : 0.0;
  out.cv = cv;
  return out;
}

double Cv(absl::Span<const double> x, double mean) {
  if (x.empty() || mean <= 0) return 0.0;
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean);
  return std::sqrt(var / static_cast<double>(x.size())) / mean;
}

double Mean(absl::Span<const double> x) {
  double sum = 0;
  for (double v : x) sum += v;
  return x.empty() ? 0.0 : sum / static_cast<double>(x.size());
}

}  // namespace

LoadImbalance ComputeImbalance(absl::Span<const double> loads) {
  const double mean = Mean(loads);
  const double max = loads.empty() ? 0.0 : *std::max_element(loads.begin(), loads.end());
  return FromMoments(mean, max, Cv(loads, mean));
}

LoadImbalance ComputeOverallImbalance(const std::vector<std::vector<double>>& loads) {
  double sum_mean = 0, sum_max = 0;
  std::vector<double> summed;
  for (const std::vector<double>& layer : loads) {
    sum_mean += Mean(layer);
    sum_max += layer.empty() ? 0.0 : *std::max_element(layer.begin(), layer.end());
    summed.resize(std::max(summed.size(), layer.size()), 0.0);
    for (size_t i = 0; i < layer.size(); ++i) summed[i] += layer[i];
  }
  return FromMoments(sum_mean, sum_max, Cv(summed, Mean(summed)));
}

double ChanceFirstChoiceRepeat(int n_experts) { return n_experts > 0 ? 1.0 / n_experts : 0.0; }

double ChanceSetOverlap(int n_experts, int top_k) {
  // C(E - k, k) / C(E, k) = prod_{i=0}^{k-1} (E - k - i) / (E - i): the second set avoids the first.
  double disjoint = 1.0;
  for (int i = 0; i < top_k; ++i) {
    disjoint *= std::max(0.0, static_cast<double>(n_experts - top_k - i)) / (n_experts - i);
  }
  return 1.0 - disjoint;
}

void FinishLocality(int n_experts, int top_k, RoutingLocality* l) {
  const double pairs = static_cast<double>(l->pairs);
  l->first_choice_repeat_ratio = pairs > 0 ? static_cast<double>(l->first_choice_repeats) / pairs : 0.0;
  l->set_overlap_ratio = pairs > 0 ? static_cast<double>(l->set_overlaps) / pairs : 0.0;
  l->chance_first_choice = ChanceFirstChoiceRepeat(n_experts);
  l->chance_set_overlap = ChanceSetOverlap(n_experts, top_k);
}

}  // namespace moe
