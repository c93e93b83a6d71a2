// LayerState: one layer's replicas on workers and their predicted loads, the planner's working
// state (coordinator/placement/placement_search.h changes it). Internal to the planner.
#pragma once

#include <algorithm>
#include <vector>

#include "core/placement/expert_placement.h"

namespace moe::placement {

// Load-comparison slack: sums of per-replica shares differ in their last bits by summation order.
inline double Tolerance(double scale) { return 1e-9 * std::max(1.0, scale); }

// One layer's assignment of replicas to workers (w = rank - 1), with each worker's predicted load
// under the even split (an expert's load / its replica count on every worker holding it).
class LayerState {
 public:
  LayerState(const std::vector<double>& load, int n_workers, int capacity)
      : load_(load),
        n_workers_(n_workers),
        n_experts_(static_cast<int>(load.size())),
        capacity_(capacity),
        held_(static_cast<size_t>(n_workers) * load.size(), 0),
        count_(n_workers, 0),
        replicas_(load.size(), 0),
        worker_load_(n_workers, 0.0) {}

  int n_workers() const { return n_workers_; }
  int n_experts() const { return n_experts_; }
  int capacity() const { return capacity_; }
  bool holds(int w, int e) const { return held_[Cell(w, e)] != 0; }
  int count(int w) const { return count_[w]; }
  int replicas(int e) const { return replicas_[e]; }
  double worker_load(int w) const { return worker_load_[w]; }
  // Load of one replica of e (its load if it had `r` replicas).
  double Share(int e) const { return Share(e, replicas_[e]); }
  double Share(int e, int r) const { return r > 0 ? load_[e] / r : 0.0; }

  // REQUIRES: !holds(w, e). May leave w over capacity; the caller restores it.
  void Add(int w, int e) {
    Reweigh(e, replicas_[e] + 1);
    held_[Cell(w, e)] = 1;
    ++count_[w];
    worker_load_[w] += Share(e);
  }
  // REQUIRES: holds(w, e). May leave e without a replica; the caller restores it.
  void Remove(int w, int e) {
    worker_load_[w] -= Share(e);
    held_[Cell(w, e)] = 0;
    --count_[w];
    Reweigh(e, replicas_[e] - 1);
  }
  // Recomputes every worker's load from scratch (the incremental updates drift in the last bits).
  void Refresh() {
    for (int w = 0; w < n_workers_; ++w) {
      double sum = 0.0;
      for (int e = 0; e < n_experts_; ++e) {
        if (holds(w, e)) sum += Share(e);
      }
      worker_load_[w] = sum;
    }
  }

  int Busiest() const {
    return static_cast<int>(std::max_element(worker_load_.begin(), worker_load_.end()) -
                            worker_load_.begin());
  }
  double Max() const { return worker_load_[Busiest()]; }
  double SumSquares() const {
    double s = 0.0;
    for (double x : worker_load_) s += x * x;
    return s;
  }
  std::vector<int> Hosted(int w) const {
    std::vector<int> out;
    for (int e = 0; e < n_experts_; ++e) {
      if (holds(w, e)) out.push_back(e);
    }
    return out;
  }
  // In expert order, an expert's replicas by rank.
  std::vector<ExpertSlot> Slots() const {
    std::vector<ExpertSlot> out;
    for (int e = 0; e < n_experts_; ++e) {
      for (int w = 0; w < n_workers_; ++w) {
        if (holds(w, e)) out.push_back({w + 1, e});
      }
    }
    return out;
  }

 private:
  size_t Cell(int w, int e) const { return static_cast<size_t>(w) * n_experts_ + e; }
  // Sets e's replica count, moving every holder's share of it to the new split.
  void Reweigh(int e, int r) {
    const double delta = Share(e, r) - Share(e);
    for (int w = 0; w < n_workers_; ++w) {
      if (holds(w, e)) worker_load_[w] += delta;
    }
    replicas_[e] = r;
  }

  const std::vector<double>& load_;  // [E]
  int n_workers_, n_experts_, capacity_;
  std::vector<char> held_;           // [W * E]
  std::vector<int> count_;           // [W] slots hosted
  std::vector<int> replicas_;        // [E]
  std::vector<double> worker_load_;  // [W]
};

}  // namespace moe::placement
