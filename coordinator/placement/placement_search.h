// The steps of the placement planner on one layer: the EPLB baseline (Replicate, Pack), the local
// search (Improve), and keeping the current placement (Relabel, KeepCurrent). Internal to
// coordinator/placement/placement_planner.cc, which documents the algorithm.
#pragma once

#include <vector>

#include "coordinator/placement/placement_layer.h"

namespace moe::placement {

// Replicate: one slot per expert, then every spare slot (W * capacity in all) to the expert with
// the highest load per replica (ties: the lower expert), an expert on W workers at most. [E]
std::vector<int> Replicate(const std::vector<double>& load, int n_workers, int capacity);

// Pack: replicas ([E] counts) by falling load per replica, each to the least-loaded worker (then
// the one with fewest slots, then the lower rank) that has a free slot and lacks that expert.
// REQUIRES: `s` empty.
void Pack(const std::vector<int>& replicas, LayerState* s);

// Moves, swaps and re-replicates replicas of the busiest worker while (max load, sum of squared
// loads) falls.
void Improve(LayerState* s);

// Hosted flags [W][E] of a layer's slots.
std::vector<std::vector<char>> HeldTable(const std::vector<ExpertSlot>& slots, int n_workers,
                                         int n_experts);

// Slots of `s` whose (worker, expert) `current` ([W][E]) lacks.
int MovedSlots(const LayerState& s, const std::vector<std::vector<char>>& current);

// `s` with its workers renamed (loads unchanged) to overlap `current` most.
LayerState Relabel(const LayerState& s, const std::vector<std::vector<char>>& current);

// Undoes moves against `current` while every worker's load stays within `bound`.
// REQUIRES: s->Max() <= bound.
void KeepCurrent(const std::vector<std::vector<char>>& current, double bound, LayerState* s);

}  // namespace moe::placement
