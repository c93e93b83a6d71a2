// ExpertPlacement: which worker rank hosts each expert of each layer.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

class ExpertPlacement {
 public:
  // Workers are MPI ranks 1..n_workers (rank 0 is the coordinator). Contiguous blocks: with 8
  // experts and 4 workers, worker 1 gets experts 0-1, worker 2 gets 2-3, ...; when n_workers does
  // not divide n_experts the first (n_experts % n_workers) workers get one more.
  static absl::StatusOr<ExpertPlacement> Contiguous(int n_layers, int n_experts, int n_workers);

  // Reads a JSON placement file. Either one table for every layer or one per layer:
  //   {"experts": [1, 1, 2, 2, 3, 3, 4, 4]}
  //   {"layers": [[1, 2, 3, 4, 1, 2, 3, 4], [4, 3, 2, 1, 4, 3, 2, 1], ...]}
  // Entries are worker ranks. Validated against the model and the worker count.
  static absl::StatusOr<ExpertPlacement> FromJson(const std::string& json_text, int n_layers,
                                                  int n_experts, int n_workers);
  static absl::StatusOr<ExpertPlacement> FromFile(const std::string& path, int n_layers,
                                                  int n_experts, int n_workers);

  // From an explicit table [layer][expert] -> rank, validated like a file.
  static absl::StatusOr<ExpertPlacement> FromTable(std::vector<std::vector<int>> table, int n_workers);

  int owner(int layer, int expert) const { return table_[layer][expert]; }
  bool Owns(int rank, int layer, int expert) const { return table_[layer][expert] == rank; }
  int n_layers() const { return static_cast<int>(table_.size()); }
  int n_experts() const { return table_.empty() ? 0 : static_cast<int>(table_[0].size()); }
  int n_workers() const { return n_workers_; }
  const std::vector<std::vector<int>>& table() const { return table_; }
  // Experts (of every layer) hosted by `rank`.
  int CountOwned(int rank) const;

  // Human-readable table for start-up logs: one line per worker, or per layer when layers differ.
  std::string Describe() const;

 private:
  absl::Status Validate() const;

  std::vector<std::vector<int>> table_;  // [layer][expert] -> worker rank
  int n_workers_ = 0;
};

}  // namespace moe
