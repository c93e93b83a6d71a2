// PlanPlacement: chooses each layer's expert slots (with replicas of hot experts) from measured
// loads.
//
// Per layer the plan assigns W * S slots at most (S per worker) to the E experts: DeepSeek's EPLB
// as the baseline (replicate: every expert one slot, then each spare slot to the expert with the
// highest load per replica; pack: replicas by falling load per replica, each to the least-loaded
// worker with a free slot that does not hold that expert yet), then a local search that moves,
// swaps and re-replicates replicas while the busiest worker's load drops. With a current placement
// the workers of the plan are renamed to overlap it most, the search also starts from it, and plans
// that tie on the busiest load (within `keep_within`) keep experts where they are.
//
// Predicted load: a replicated expert's load split evenly over its replicas. The runtime splits
// each step's choices greedily (to the replica whose rank is least loaded so far), which this
// approximates; scripts/analyze_routing.py --placement replays a trace under that exact rule.
//
// Every plan meets: no worker over S slots per layer, every worker at least one slot, every expert
// at least one slot, no worker holding two replicas of one expert. Thread-compatible (pure
// functions).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/placement/expert_placement.h"

namespace moe {

struct PlannerOptions {
  int n_workers = 0;         // W: worker ranks 1..W, at most E (every worker hosts a slot), e.g. 4
  int slots_per_worker = 0;  // S: expert slots per worker per layer, S * W >= E, e.g. 3
                             // (S = ceil(E / W): no room for replicas; above E counts as E)
  bool improve = true;       // false: the EPLB baseline alone (replicate + pack), for comparison
  double keep_within = 0.0;  // with a current placement: a plan up to this fraction above the best
                             // busiest-worker load may be taken if it moves fewer slots
                             // (0: exact ties only; 0.02: within 2%)

  // Checks every field against the model's expert count; names the field that is wrong.
  absl::Status Validate(int n_experts) const;
};

struct LayerPlan {
  std::vector<ExpertSlot> slots;    // [n_slots] in expert order; an expert's replicas by rank
  std::vector<double> worker_load;  // [W] predicted token-choices of rank w + 1 (even split)
  double mean = 0.0;                // mean of worker_load
  double max = 0.0;                 // max of worker_load: what the layer waits for
  double balancedness = 1.0;        // mean / max (1 when nothing is routed)
  int replicas = 0;                 // slots beyond one per expert
  int moved_slots = 0;              // slots whose (rank, expert) the current placement lacks:
                                    // expert weights a worker must load (0 without a current one)
  int moved_experts = 0;            // experts whose set of ranks differs from the current one
};

struct PlacementPlan {
  std::vector<LayerPlan> layers;  // [L]
  double balancedness = 1.0;      // sum over layers of mean / sum of max (1 when nothing routed)
  int moved_slots = 0;            // summed over layers
  int moved_experts = 0;          // summed over layers
};

// loads: [L][E] token-choices per (layer, expert), finite and >= 0 (fractions allowed).
// current: [L][slot] today's placement, or empty; slots a worker hosts beyond S only make it
// unusable as a starting point (moves are still counted against it).
absl::StatusOr<PlacementPlan> PlanPlacement(
    const std::vector<std::vector<double>>& loads, const PlannerOptions& options,
    const std::vector<std::vector<ExpertSlot>>& current = {});

// The predicted loads of a given placement ([L][slot], ranks 1..n_workers), with the same even
// split; moves are counted against `current` when it is not empty.
absl::StatusOr<PlacementPlan> EvaluatePlacement(
    const std::vector<std::vector<double>>& loads,
    const std::vector<std::vector<ExpertSlot>>& slots, int n_workers,
    const std::vector<std::vector<ExpertSlot>>& current = {});

}  // namespace moe
