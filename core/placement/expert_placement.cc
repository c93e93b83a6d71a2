#include "core/placement/expert_placement.h"

#include <climits>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe {

namespace {

// One slot per expert, slot e holding expert e: what every table-shaped placement means.
std::vector<std::vector<ExpertSlot>> OneSlotPerExpert(const std::vector<std::vector<int>>& table) {
  std::vector<std::vector<ExpertSlot>> slots(table.size());
  for (size_t l = 0; l < table.size(); ++l) {
    for (size_t e = 0; e < table[l].size(); ++e) {
      slots[l].push_back({table[l][e], static_cast<int>(e)});
    }
  }
  return slots;
}

}  // namespace

absl::StatusOr<ExpertPlacement> ExpertPlacement::Contiguous(int n_layers, int n_experts,
                                                            int n_workers) {
  if (n_workers < 1) return absl::InvalidArgumentError("need at least one worker");
  if (n_workers > n_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat(n_workers, " workers for ", n_experts,
                     " experts per layer: some workers would host nothing"));
  }
  std::vector<int> row;
  const int base = n_experts / n_workers, extra = n_experts % n_workers;
  for (int w = 0; w < n_workers; ++w) {
    for (int i = 0; i < base + (w < extra ? 1 : 0); ++i) row.push_back(w + 1);
  }
  return FromTable(std::vector<std::vector<int>>(static_cast<size_t>(n_layers), row), n_workers);
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromJson(const std::string& json_text,
                                                          int n_layers, int n_experts,
                                                          int n_workers, int expert_slots) {
  const auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError("placement: not a JSON object");
  // One layer's slots: per expert in order, one per listed rank in the listed order.
  auto read_row = [&](const nlohmann::json& row,
                      int layer) -> absl::StatusOr<std::vector<ExpertSlot>> {
    if (!row.is_array() || static_cast<int>(row.size()) != n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " must list ",
                                                     n_experts, " worker ranks, one per expert"));
    }
    std::vector<ExpertSlot> out;
    // A rank as JSON: an integer in int range (a larger one must not wrap onto a real rank); the
    // range 1..W is checked with the slots.
    auto rank_of = [&](const nlohmann::json& v, size_t e) -> absl::StatusOr<int> {
      const bool in_range = v.is_number_unsigned()
                                ? v.get<uint64_t>() <= uint64_t{INT_MAX}
                                : v.get<int64_t>() >= INT_MIN && v.get<int64_t>() <= INT_MAX;
      if (!in_range) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                       " names worker rank ", v.dump(),
                                                       ", outside 1..", n_workers));
      }
      return static_cast<int>(v.get<int64_t>());
    };
    for (size_t e = 0; e < row.size(); ++e) {
      const int expert = static_cast<int>(e);
      if (row[e].is_number_integer()) {
        MOE_ASSIGN_OR_RETURN(const int r, rank_of(row[e], e));
        out.push_back({r, expert});
        continue;
      }
      if (!row[e].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                       " is unowned (expected a worker rank, got ",
                                                       row[e].dump(), ")"));
      }
      if (row[e].empty()) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                       " has an empty list of worker ranks"));
      }
      const size_t first = out.size();
      for (const nlohmann::json& rank : row[e]) {
        if (!rank.is_number_integer()) {
          return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ", e,
                                                         " lists ", rank.dump(),
                                                         ", not a worker rank"));
        }
        MOE_ASSIGN_OR_RETURN(const int r, rank_of(rank, e));
        // A second replica on one rank would run the same weights there and add nothing.
        for (size_t i = first; i < out.size(); ++i) {
          if (out[i].rank == r) {
            return absl::InvalidArgumentError(absl::StrCat("placement: layer ", layer, " expert ",
                                                           e, " lists worker rank ", r, " twice"));
          }
        }
        out.push_back({r, expert});
      }
    }
    return out;
  };
  std::vector<std::vector<ExpertSlot>> slots;
  if (j.contains("experts")) {
    MOE_ASSIGN_OR_RETURN(std::vector<ExpertSlot> row, read_row(j["experts"], 0));
    slots.assign(static_cast<size_t>(n_layers), row);
  } else if (j.contains("layers")) {
    const auto& layers = j["layers"];
    if (!layers.is_array() || static_cast<int>(layers.size()) != n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: \"layers\" must hold ", n_layers, " tables, one per layer"));
    }
    for (int l = 0; l < n_layers; ++l) {
      MOE_ASSIGN_OR_RETURN(std::vector<ExpertSlot> row, read_row(layers[l], l));
      slots.push_back(std::move(row));
    }
  } else {
    return absl::InvalidArgumentError("placement: expected an \"experts\" or a \"layers\" field");
  }
  int budget = expert_slots;
  if (j.contains("expert_slots")) {
    const auto& in_file = j["expert_slots"];
    if (!in_file.is_number_integer() || in_file.get<int64_t>() < 0 ||
        in_file.get<int64_t>() > 1 << 20) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement: \"expert_slots\" must be a count of slots >= 0, got ", in_file.dump()));
    }
    const int file_budget = in_file.get<int>();
    if (expert_slots > 0 && file_budget != expert_slots) {
      return absl::InvalidArgumentError(absl::StrCat("placement: \"expert_slots\": ", file_budget,
                                                     " disagrees with --expert-slots ",
                                                     expert_slots));
    }
    budget = file_budget;
  }
  MOE_ASSIGN_OR_RETURN(ExpertPlacement p, FromSlots(std::move(slots), n_experts, n_workers));
  MOE_RETURN_IF_ERROR(p.CheckSlotBudget(budget));
  p.expert_slots_ = budget;
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromTable(std::vector<std::vector<int>> table,
                                                           int n_workers) {
  for (const auto& row : table) {
    if (row.size() != table[0].size()) return absl::InvalidArgumentError("placement: ragged table");
  }
  const int n_experts = table.empty() ? 0 : static_cast<int>(table[0].size());
  return FromSlots(OneSlotPerExpert(table), n_experts, n_workers);
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromSlots(
    std::vector<std::vector<ExpertSlot>> slots, int n_experts, int n_workers) {
  ExpertPlacement p;
  p.slots_ = std::move(slots);
  p.n_experts_ = n_experts;
  p.n_workers_ = n_workers;
  MOE_RETURN_IF_ERROR(p.Index(/*lowest_rank=*/1));
  std::vector<int> owned(static_cast<size_t>(n_workers) + 1, 0);
  for (const auto& layer : p.slots_) {
    for (const ExpertSlot& s : layer) ++owned[s.rank];
  }
  for (int r = 1; r <= n_workers; ++r) {
    if (owned[r] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement: worker rank ", r, " hosts no expert"));
    }
  }
  return p;
}

ExpertPlacement ExpertPlacement::InProcess(int n_layers, int n_experts) {
  ExpertPlacement p;
  p.slots_ = OneSlotPerExpert(std::vector<std::vector<int>>(
      static_cast<size_t>(n_layers), std::vector<int>(static_cast<size_t>(n_experts), 0)));
  p.n_experts_ = n_experts;
  MOE_CHECK(p.Index(/*lowest_rank=*/0).ok());  // one slot per expert always indexes
  return p;
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromFile(const std::string& path, int n_layers,
                                                          int n_experts, int n_workers,
                                                          int expert_slots) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open placement file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto p = FromJson(ss.str(), n_layers, n_experts, n_workers, expert_slots);
  if (!p.ok())
    return absl::Status(p.status().code(), absl::StrCat(path, ": ", p.status().message()));
  return p;
}

absl::Status ExpertPlacement::Index(int lowest_rank) {
  replicas_.assign(slots_.size(), std::vector<std::vector<int>>(static_cast<size_t>(n_experts_)));
  table_.assign(slots_.size(), std::vector<int>(static_cast<size_t>(n_experts_), 0));
  for (size_t l = 0; l < slots_.size(); ++l) {
    for (size_t s = 0; s < slots_[l].size(); ++s) {
      const ExpertSlot& slot = slots_[l][s];
      if (slot.expert < 0 || slot.expert >= n_experts_) {
        return absl::InvalidArgumentError(absl::StrCat("placement: layer ", l, " slot ", s,
                                                       " holds expert ", slot.expert, " of ",
                                                       n_experts_));
      }
      if (slot.rank < lowest_rank || slot.rank > n_workers_) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: layer ", l, " expert ", slot.expert, " is assigned to rank ",
                         slot.rank, ", outside the worker ranks 1..", n_workers_));
      }
      replicas_[l][slot.expert].push_back(static_cast<int>(s));
    }
    for (int e = 0; e < n_experts_; ++e) {
      if (replicas_[l][e].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: layer ", l, " expert ", e, " is in no slot"));
      }
      table_[l][e] = slots_[l][replicas_[l][e][0]].rank;
    }
  }
  return absl::OkStatus();
}

bool ExpertPlacement::Owns(int rank, int layer, int expert) const {
  for (int s : replicas_[layer][expert]) {
    if (slots_[layer][s].rank == rank) return true;
  }
  return false;
}

int ExpertPlacement::CountOwned(int rank) const {
  int n = 0;
  for (const auto& layer : slots_)
    for (const ExpertSlot& s : layer) n += (s.rank == rank);
  return n;
}

int ExpertPlacement::CountSlots(int rank, int layer) const {
  int n = 0;
  for (const ExpertSlot& s : slots_[layer]) n += (s.rank == rank);
  return n;
}

absl::Status ExpertPlacement::CheckSlotBudget(int expert_slots) const {
  if (expert_slots <= 0) return absl::OkStatus();
  for (int l = 0; l < n_layers(); ++l) {
    for (int r = 1; r <= n_workers_; ++r) {
      const int n = CountSlots(r, l);
      if (n > expert_slots) {
        return absl::InvalidArgumentError(
            absl::StrCat("placement: worker rank ", r, " hosts ", n, " expert slots of layer ", l,
                         ", over the budget of ", expert_slots, " per layer (--expert-slots)"));
      }
    }
  }
  return absl::OkStatus();
}

std::string ExpertPlacement::Describe() const {
  auto same_slots = [](const std::vector<ExpertSlot>& a, const std::vector<ExpertSlot>& b) {
    if (a.size() != b.size()) return false;
    for (size_t s = 0; s < a.size(); ++s) {
      if (a[s].rank != b[s].rank || a[s].expert != b[s].expert) return false;
    }
    return true;
  };
  // An expert's ranks in slot order, replicas joined by '+', as a file lists them.
  auto ranks_of = [&](int l, int e) {
    std::vector<int> ranks;
    for (int s : replicas_[l][e]) ranks.push_back(slots_[l][s].rank);
    return absl::StrJoin(ranks, "+");
  };
  bool uniform = true;
  for (const auto& layer : slots_) uniform = uniform && same_slots(layer, slots_[0]);
  std::string out;
  if (uniform && !slots_.empty()) {
    for (int r = 1; r <= n_workers_; ++r) {
      std::vector<int> experts;
      for (const ExpertSlot& s : slots_[0])
        if (s.rank == r) experts.push_back(s.expert);
      absl::StrAppend(&out, "  worker rank ", r, ": experts ", absl::StrJoin(experts, ","),
                      " of every layer\n");
    }
    std::vector<std::string> replicated;
    for (int e = 0; e < n_experts_; ++e) {
      if (replicas_[0][e].size() > 1) replicated.push_back(absl::StrCat(e, " on ", ranks_of(0, e)));
    }
    if (!replicated.empty()) {
      absl::StrAppend(&out, "  replicated experts (on ranks): ", absl::StrJoin(replicated, ", "),
                      "\n");
    }
    return out;
  }
  for (size_t l = 0; l < slots_.size(); ++l) {
    // Slots numbered in expert order (every file's numbering) read as the file's table.
    bool expert_order = true;
    for (size_t s = 1; s < slots_[l].size(); ++s) {
      expert_order = expert_order && slots_[l][s - 1].expert <= slots_[l][s].expert;
    }
    if (expert_order) {
      std::vector<std::string> entries;
      for (int e = 0; e < n_experts_; ++e) entries.push_back(ranks_of(static_cast<int>(l), e));
      absl::StrAppend(&out, "  layer ", l, ": expert->rank ", absl::StrJoin(entries, " "), "\n");
      continue;
    }
    absl::StrAppend(&out, "  layer ", l, ": slot expert@rank");
    for (const ExpertSlot& s : slots_[l]) absl::StrAppend(&out, " ", s.expert, "@", s.rank);
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string ExpertPlacement::ToJson(int expert_slots) const {
  if (expert_slots <= 0) expert_slots = expert_slots_;
  std::string out = "{";
  if (expert_slots > 0) out += absl::StrCat("\"expert_slots\": ", expert_slots, ", ");
  out += "\"layers\": [\n";
  for (int l = 0; l < n_layers(); ++l) {
    out += "  [";
    for (int e = 0; e < n_experts_; ++e) {
      const std::vector<int>& slots = replicas_[l][e];
      if (e > 0) out += ", ";
      if (slots.size() > 1) out += "[";
      for (size_t i = 0; i < slots.size(); ++i) {
        out += absl::StrCat(i > 0 ? ", " : "", slots_[l][slots[i]].rank);
      }
      if (slots.size() > 1) out += "]";
    }
    out += l + 1 < n_layers() ? "],\n" : "]\n";
  }
  return out + "]}\n";
}

}  // namespace moe
