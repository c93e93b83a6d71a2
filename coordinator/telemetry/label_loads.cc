#include "coordinator/telemetry/label_loads.h"

namespace moe {

LabelLoads::LabelLoads(int n_layers, int n_experts, int top_k)
    : n_layers_(n_layers), n_experts_(n_experts), top_k_(top_k) {}

int LabelLoads::IndexOf(const std::string& label) {
  if (auto it = index_.find(label); it != index_.end()) return it->second;
  // The bound counts real labels only; "(other)" is one more entry beyond it.
  const bool full =
      static_cast<int>(index_.size()) - static_cast<int>(index_.count(kOther)) >= kMaxLabels;
  const std::string& name = full ? std::string(kOther) : label;
  if (full) {
    if (auto it = index_.find(name); it != index_.end()) return it->second;
  }
  LabelLoad entry;
  entry.label = name;
  entry.expert_tokens.assign(static_cast<size_t>(n_layers_) * n_experts_, 0);
  labels_.push_back(std::move(entry));
  const int index = static_cast<int>(labels_.size()) - 1;
  index_[name] = index;
  return index;
}

void LabelLoads::StartSequence(uint64_t sequence_id, const SequenceInfo& info) {
  const int index = IndexOf(info.label);
  sequences_[sequence_id] = index;
  ++labels_[index].requests;
  labels_[index].prompt_tokens += info.prompt_tokens;
}

void LabelLoads::EndSequence(uint64_t sequence_id) { sequences_.erase(sequence_id); }

void LabelLoads::AddStep(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) {
  const size_t E = static_cast<size_t>(n_experts_);
  int last = -1;
  uint64_t last_id = 0;
  for (size_t row = 0; row < tokens.size(); ++row) {
    // Rows of one sequence come together (a prefill chunk), so one lookup serves them all.
    if (last < 0 || tokens[row].sequence_id != last_id) {
      auto it = sequences_.find(tokens[row].sequence_id);
      last = it != sequences_.end() ? it->second : IndexOf("");
      last_id = tokens[row].sequence_id;
    }
    LabelLoad& label = labels_[last];
    if (!tokens[row].prefill) ++label.generated_tokens;
    for (int l = 0; l < n_layers_; ++l) {
      const int32_t* chosen = routing[l].expert.data() + row * top_k_;
      for (int j = 0; j < top_k_; ++j) ++label.expert_tokens[l * E + chosen[j]];
    }
  }
}

void LabelLoads::Reset() {
  std::vector<LabelLoad> old = std::move(labels_);
  labels_.clear();
  index_.clear();
  // Labels of running sequences stay, in their old order, so they keep counting after the reset.
  std::vector<int> moved(old.size(), -1);
  for (const auto& [id, index] : sequences_) moved[index] = 0;
  for (size_t i = 0; i < old.size(); ++i) {
    if (moved[i] < 0) continue;
    LabelLoad entry;
    entry.label = old[i].label;
    entry.expert_tokens.assign(static_cast<size_t>(n_layers_) * n_experts_, 0);
    moved[i] = static_cast<int>(labels_.size());
    index_[entry.label] = moved[i];
    labels_.push_back(std::move(entry));
  }
  for (auto& [id, index] : sequences_) index = moved[index];
}

std::vector<LabelLoad> LabelLoads::Snapshot() const { return labels_; }

}  // namespace moe
