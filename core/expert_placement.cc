#include "core/expert_placement.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {

absl::StatusOr<ExpertPlacement> ExpertPlacement::Contiguous(int n_layers, int n_experts, int n_workers) {
  if (n_workers < 1) return absl::InvalidArgumentError("need at least one worker");
  if (n_workers > n_experts) {
    return absl::InvalidArgumentError(absl::StrCat(n_workers, " workers for ", n_experts,
                                                   " experts per layer: some workers would host nothing"));
  }
  ExpertPlacement p;
  p.n_workers_ = n_workers;
  std::vector<int> row;
  const int base = n_experts / n_workers, extra = n_experts % n_workers;
  for (int w = 0; w < n_workers; ++w) {
    for (int i = 0; i < base + (w < extra ? 1 : 0); ++i) row.push_back(w + 1);
  }
  p.table_.assign(static_cast<size_t>(n_layers), row);
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromJson(const std::string& json_text, int n_layers,
                                                          int n_experts, int n_workers) {
  const auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("placement: not a JSON object");
  auto read_row = [&](const nlohmann::json& row, int layer) -> absl::StatusOr<std::vector<int>> {
    if (!row.is_array() || static_cast<int>(row.size()) != n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " must list ",
                                                     n_experts, " worker ranks, one per expert"));
    }
    std::vector<int> out;
    for (size_t e = 0; e < row.size(); ++e) {
      if (!row[e].is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                       " is unowned (expected a worker rank, got ",
                                                       row[e].dump(), ")"));
      }
      out.push_back(row[e].get<int>());
    }
    return out;
  };
  ExpertPlacement p;
  p.n_workers_ = n_workers;
  if (j.contains("experts")) {
    MOE_ASSIGN_OR_RETURN(std::vector<int> row, read_row(j["experts"], 0));
    p.table_.assign(static_cast<size_t>(n_layers), row);
  } else if (j.contains("layers")) {
    const auto& layers = j["layers"];
    if (!layers.is_array() || static_cast<int>(layers.size()) != n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: \"layers\" must hold ", n_layers, " tables, one per layer"));
    }
    for (int l = 0; l < n_layers; ++l) {
      MOE_ASSIGN_OR_RETURN(std::vector<int> row, read_row(layers[l], l));
      p.table_.push_back(std::move(row));
    }
  } else {
    return absl::InvalidArgumentError("placement: expected an \"experts\" or a \"layers\" field");
  }
  MOE_RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromTable(std::vector<std::vector<int>> table,
                                                           int n_workers) {
  ExpertPlacement p;
  p.table_ = std::move(table);
  p.n_workers_ = n_workers;
  for (const auto& row : p.table_) {
    if (row.size() != p.table_[0].size()) return absl::InvalidArgumentError("placement: ragged table");
  }
  MOE_RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromFile(const std::string& path, int n_layers,
                                                          int n_experts, int n_workers) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open placement file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto p = FromJson(ss.str(), n_layers, n_experts, n_workers);
  if (!p.ok()) return absl::Status(p.status().code(), absl::StrCat(path, ": ", p.status().message()));
  return p;
}

absl::Status ExpertPlacement::Validate() const {
  std::vector<int> owned(static_cast<size_t>(n_workers_) + 1, 0);
  for (size_t l = 0; l < table_.size(); ++l) {
    for (size_t e = 0; e < table_[l].size(); ++e) {
      const int r = table_[l][e];
      if (r < 1 || r > n_workers_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "placement: layer ", l, " expert ", e, " is assigned to rank ", r,
            ", outside the worker ranks 1..", n_workers_));
      }
      ++owned[r];
    }
  }
  for (int r = 1; r <= n_workers_; ++r) {
    if (owned[r] == 0) {
      return absl::InvalidArgumentError(absl::StrCat("placement: worker rank ", r, " hosts no expert"));
    }
  }
  return absl::OkStatus();
}

int ExpertPlacement::CountOwned(int rank) const {
  int n = 0;
  for (const auto& row : table_)
    for (int r : row) n += (r == rank);
  return n;
}

std::string ExpertPlacement::Describe() const {
  bool uniform = true;
  for (const auto& row : table_) uniform = uniform && row == table_[0];
  std::string out;
  if (uniform) {
    for (int r = 1; r <= n_workers_; ++r) {
      std::vector<int> experts;
      for (int e = 0; e < n_experts(); ++e)
        if (table_[0][e] == r) experts.push_back(e);
      absl::StrAppend(&out, "  worker rank ", r, ": experts ", absl::StrJoin(experts, ","),
                      " of every layer\n");
    }
  } else {
    for (size_t l = 0; l < table_.size(); ++l) {
      absl::StrAppend(&out, "  layer ", l, ": expert->rank ", absl::StrJoin(table_[l], " "), "\n");
    }
  }
  return out;
}

}  // namespace moe
