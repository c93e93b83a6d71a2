// ExpertPlacement: where each expert of each layer lives, as physical slots on worker ranks.
//
// Per layer, slots are numbered 0, 1, 2, ... across all ranks; each slot holds one logical expert
// on one rank, and a logical expert may fill several slots (replicas of a hot expert, on several
// ranks). The router picks logical experts; the dispatch plan (coordinator/inference/moe_routing.h)
// picks one of the expert's slots. A placement without replicas has one slot per expert, slot e
// holding expert e.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

// One physical expert slot of a layer.
struct ExpertSlot {
  int rank = 0;    // the worker rank hosting it (0: the process itself, in-process exchange only)
  int expert = 0;  // the logical expert whose weights it runs
};

class ExpertPlacement {
 public:
  // Workers are MPI ranks 1..n_workers (rank 0 is the coordinator). Contiguous blocks: with 8
  // experts and 4 workers, worker 1 gets experts 0-1, worker 2 gets 2-3, ...; when n_workers does
  // not divide n_experts the first (n_experts % n_workers) workers get one more.
  static absl::StatusOr<ExpertPlacement> Contiguous(int n_layers, int n_experts, int n_workers);

  // Reads a JSON placement file. Either one table for every layer or one per layer:
  //   {"experts": [1, 1, 2, 2, 3, 3, 4, 4]}
  //   {"layers": [[1, 2, 3, 4, 1, 2, 3, 4], [4, 3, 2, 1, 4, 3, 2, 1], ...]}
  // An entry is a worker rank, or a list of distinct worker ranks: one replica (slot) of that
  // expert on each, e.g. {"experts": [[1, 2], 1, 2, [2, 1]]}. A layer's slots are numbered in
  // expert order, then in the listed order within an entry (there: slots 0, 1 = expert 0 on ranks
  // 1, 2; slot 2 = expert 1; slot 3 = expert 2; slots 4, 5 = expert 3 on ranks 2, 1). An optional
  // top-level "expert_slots": S is a budget (CheckSlotBudget); expert_slots > 0 (the
  // --expert-slots flag) must then agree with it, and applies alone when the file has none.
  // Validated against the model, the worker count and the budget.
  static absl::StatusOr<ExpertPlacement> FromJson(const std::string& json_text, int n_layers,
                                                  int n_experts, int n_workers,
                                                  int expert_slots = 0);
  static absl::StatusOr<ExpertPlacement> FromFile(const std::string& path, int n_layers,
                                                  int n_experts, int n_workers,
                                                  int expert_slots = 0);

  // From an explicit table [layer][expert] -> rank (one slot per expert), validated like a file.
  static absl::StatusOr<ExpertPlacement> FromTable(std::vector<std::vector<int>> table,
                                                   int n_workers);

  // From slots [layer][slot], validated: ranks in 1..n_workers, experts in [0, n_experts), every
  // expert of every layer in at least one slot, every worker hosting at least one slot.
  static absl::StatusOr<ExpertPlacement> FromSlots(std::vector<std::vector<ExpertSlot>> slots,
                                                   int n_experts, int n_workers);

  // The whole model in one process (the in-process exchange): one slot per expert, on rank 0.
  static ExpertPlacement InProcess(int n_layers, int n_experts);

  // Slots of one layer, by slot number.
  const std::vector<ExpertSlot>& slots(int layer) const { return slots_[layer]; }
  int n_slots(int layer) const { return static_cast<int>(slots_[layer].size()); }
  // The slots holding `expert` in `layer` ([1 or more], ascending).
  const std::vector<int>& replicas(int layer, int expert) const { return replicas_[layer][expert]; }

  // The rank of the expert's first slot (its only one unless replicated).
  int owner(int layer, int expert) const { return slots_[layer][replicas_[layer][expert][0]].rank; }
  // Whether `rank` hosts a slot of `expert`, and so loads its weights.
  bool Owns(int rank, int layer, int expert) const;
  int n_layers() const { return static_cast<int>(slots_.size()); }
  int n_experts() const { return n_experts_; }
  int n_workers() const { return n_workers_; }
  // [layer][expert] -> owner(layer, expert): the placement as today's file format writes it.
  const std::vector<std::vector<int>>& table() const { return table_; }
  // Slots (of every layer) hosted by `rank`: its (layer, expert) pairs when, as in every file, no
  // rank holds an expert twice.
  int CountOwned(int rank) const;
  // Slots of `layer` hosted by `rank`.
  int CountSlots(int rank, int layer) const;

  // Every worker hosts at most `expert_slots` slots of every layer (0: no limit). InvalidArgument
  // naming the first worker and layer over it, and its count, otherwise.
  absl::Status CheckSlotBudget(int expert_slots) const;
  // The slot budget a file or flag gave when it was read (FromJson, FromFile); 0: none.
  int expert_slots() const { return expert_slots_; }

  // The placement as a --placement file (FromJson reads it back to the same slots, up to their
  // numbering): per layer one entry per expert, a rank or its replicas' ranks; "expert_slots" when
  // a budget is given (or was read).
  std::string ToJson(int expert_slots = 0) const;

  // Human-readable table for start-up logs: one line per worker, or per layer when layers differ.
  std::string Describe() const;

 private:
  // Checks the slots (ranks from lowest_rank to n_workers_) and derives replicas_ and table_.
  absl::Status Index(int lowest_rank);

  std::vector<std::vector<ExpertSlot>> slots_;           // [layer][slot]
  std::vector<std::vector<std::vector<int>>> replicas_;  // [layer][expert] -> its slots
  std::vector<std::vector<int>> table_;                  // [layer][expert] -> owner rank
  int n_experts_ = 0;
  int n_workers_ = 0;
  int expert_slots_ = 0;
};

}  // namespace moe
