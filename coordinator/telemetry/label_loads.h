// LabelLoads: the load aggregator's counts per workload label (GenerateRequest.label): requests,
// prompt and generated tokens, and token-choices per (layer, expert), since reset. Labels come from
// clients, so their number is bounded: past kMaxLabels distinct ones, requests count under
// "(other)" (which no valid label can spell), and memory stays O(kMaxLabels x layers x experts).
//
// Not thread-safe: the aggregator's mutex guards it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "coordinator/inference/moe_routing.h"
#include "coordinator/inference/routing_observer.h"
#include "core/exchange/load_telemetry.h"

namespace moe {

class LabelLoads {
 public:
  static constexpr int kMaxLabels = 64;  // distinct labels, "" included; then "(other)"
  static constexpr const char* kOther = "(other)";

  LabelLoads(int n_layers, int n_experts, int top_k);

  // A sequence joins: counts the request under its label (or "(other)").
  void StartSequence(uint64_t sequence_id, const SequenceInfo& info);
  void EndSequence(uint64_t sequence_id);
  // One step's rows: each row's choices under its sequence's label ("" for a sequence never
  // started, e.g. a tool's), decode rows as generated tokens.
  void AddStep(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing);
  // Zeroes the counts; only the labels of sequences still running stay listed (with zeros).
  void Reset();
  std::vector<LabelLoad> Snapshot() const;

 private:
  int IndexOf(const std::string& label);  // adds it, or "(other)" when full

  const int n_layers_, n_experts_, top_k_;
  std::vector<LabelLoad> labels_;                 // by first appearance
  absl::flat_hash_map<std::string, int> index_;   // label -> labels_ index
  absl::flat_hash_map<uint64_t, int> sequences_;  // running sequence -> labels_ index
};

}  // namespace moe
