// The load-balance figures other MoE serving systems print, computed one way for everyone:
// telemetry, the Prometheus endpoint and the tests (scripts/routing_trace.py mirrors them).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/exchange/load_telemetry.h"

namespace moe {

// Over one set of loads (a layer's experts, or its workers). All zero counts as balanced:
// balancedness 1, imbalance ratio 0, CV 0.
LoadImbalance ComputeImbalance(absl::Span<const double> loads);

// Over layers, loads[layer][i]: balancedness = sum of means / sum of maxima (each layer waits for
// its own maximum), imbalance ratio = (sum of maxima - sum of means) / sum of means, and CV of the
// loads summed over layers.
LoadImbalance ComputeOverallImbalance(const std::vector<std::vector<double>>& loads);

// What uniform random top-k routing over E experts gives for consecutive tokens: the same first
// choice with probability 1/E; sets sharing an expert with probability 1 - C(E-k, k) / C(E, k).
double ChanceFirstChoiceRepeat(int n_experts);
double ChanceSetOverlap(int n_experts, int top_k);

// Fills the ratios and chance figures of a RoutingLocality whose counts are set.
void FinishLocality(int n_experts, int top_k, RoutingLocality* locality);

}  // namespace moe
