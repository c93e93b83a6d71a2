#include "coordinator/placement_planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {

namespace {

// Load-comparison slack: sums of per-replica shares differ in their last bits by summation order.
double Tolerance(double scale) { return 1e-9 * std::max(1.0, scale); }

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

// ----------------------------------------------------------------------------------------------
// The EPLB baseline.

// Replicate: one slot per expert, then every spare slot (W * capacity in all) to the expert with
// the highest load per replica (ties: the lower expert), an expert on W workers at most.
std::vector<int> Replicate(const std::vector<double>& load, int n_workers, int capacity) {
  const int n_experts = static_cast<int>(load.size());
  std::vector<int> r(n_experts, 1);
  for (int spare = n_workers * capacity - n_experts; spare > 0; --spare) {
    int best = -1;
    for (int e = 0; e < n_experts; ++e) {
      if (r[e] < n_workers && (best < 0 || load[e] / r[e] > load[best] / r[best])) best = e;
    }
    if (best < 0) break;
    ++r[best];
  }
  return r;
}

// Pack: replicas by falling load per replica, each to the least-loaded worker (then the one with
// fewest slots, then the lower rank) that has a free slot and does not hold that expert.
void Pack(const std::vector<int>& replicas, LayerState* s) {
  struct Replica {
    double share;
    int expert;
  };
  std::vector<Replica> order;
  for (int e = 0; e < s->n_experts(); ++e) {
    for (int i = 0; i < replicas[e]; ++i) order.push_back({s->Share(e, replicas[e]), e});
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const Replica& a, const Replica& b) { return a.share > b.share; });
  auto better = [&](int a, int b) {  // worker a is a better destination than b
    if (s->worker_load(a) != s->worker_load(b)) return s->worker_load(a) < s->worker_load(b);
    return s->count(a) < s->count(b);
  };
  for (const Replica& rep : order) {
    const int e = rep.expert;
    int dest = -1, open = -1;
    for (int w = 0; w < s->n_workers(); ++w) {
      if (s->count(w) >= s->capacity()) continue;
      if (open < 0 || better(w, open)) open = w;
      if (!s->holds(w, e) && (dest < 0 || better(w, dest))) dest = w;
    }
    MOE_CHECK(open >= 0);  // Replicate never makes more replicas than slots
    if (dest < 0) {
      // Every worker with a free slot holds e already. Another worker v lacks e (e has fewer
      // than W replicas placed) and is full; `open` holds fewer than S experts, so v has one, f,
      // that `open` lacks: move f to `open` and give v's freed slot to e.
      for (int v = 0; v < s->n_workers() && dest < 0; ++v) {
        if (s->holds(v, e)) continue;
        for (int f : s->Hosted(v)) {
          if (s->holds(open, f)) continue;
          s->Add(open, f);
          s->Remove(v, f);
          dest = v;
          break;
        }
      }
      MOE_CHECK(dest >= 0);
    }
    s->Add(dest, e);
  }
  s->Refresh();
}

// ----------------------------------------------------------------------------------------------
// Local search: from the busiest worker b, try every move of one of its replicas to another
// worker, swap with one of that worker's, new replica in a free slot, or new replica in place of a
// replica of an expert that has several; take the best by (max load, sum of squared loads) while
// it improves. The sum of squares breaks ties between workers sharing the max, so the search
// keeps going when two of them are equally busy.

struct Op {
  enum Kind { kMove, kSwap, kAdd, kReplace } kind;
  int b, e, v, f;  // replica (b, e); other worker v; its expert f (swap, replace)
};

void Apply(const Op& op, LayerState* s) {
  switch (op.kind) {
    case Op::kMove:
      s->Add(op.v, op.e);
      s->Remove(op.b, op.e);
      break;
    case Op::kSwap:
      s->Add(op.v, op.e);
      s->Add(op.b, op.f);
      s->Remove(op.b, op.e);
      s->Remove(op.v, op.f);
      break;
    case Op::kAdd:
      s->Add(op.v, op.e);
      break;
    case Op::kReplace:
      s->Add(op.v, op.e);
      s->Remove(op.v, op.f);
      break;
  }
}

void Undo(const Op& op, LayerState* s) {
  switch (op.kind) {
    case Op::kMove:
      s->Add(op.b, op.e);
      s->Remove(op.v, op.e);
      break;
    case Op::kSwap:
      s->Add(op.b, op.e);
      s->Add(op.v, op.f);
      s->Remove(op.v, op.e);
      s->Remove(op.b, op.f);
      break;
    case Op::kAdd:
      s->Remove(op.v, op.e);
      break;
    case Op::kReplace:
      s->Add(op.v, op.f);
      s->Remove(op.v, op.e);
      break;
  }
}

std::vector<Op> Candidates(const LayerState& s) {
  std::vector<Op> ops;
  const int b = s.Busiest();
  for (int e : s.Hosted(b)) {
    for (int v = 0; v < s.n_workers(); ++v) {
      if (v == b || s.holds(v, e)) continue;
      const bool room = s.count(v) < s.capacity();
      if (room && s.count(b) > 1) ops.push_back({Op::kMove, b, e, v, -1});
      if (room) ops.push_back({Op::kAdd, b, e, v, -1});
      for (int f : s.Hosted(v)) {
        if (!s.holds(b, f)) ops.push_back({Op::kSwap, b, e, v, f});
        if (s.replicas(f) > 1) ops.push_back({Op::kReplace, b, e, v, f});
      }
    }
  }
  return ops;
}

void Improve(LayerState* s) {
  for (int iter = 0; iter < 100000; ++iter) {
    const double max = s->Max(), squares = s->SumSquares();
    const double tol = Tolerance(max), tol2 = Tolerance(squares);
    double best_max = max, best_squares = squares;
    int best = -1;
    const std::vector<Op> ops = Candidates(*s);
    for (size_t i = 0; i < ops.size(); ++i) {
      Apply(ops[i], s);
      const double m = s->Max(), q = s->SumSquares();
      Undo(ops[i], s);
      // Never a higher max, so (max, squares) falls strictly and the search ends.
      if (m > max) continue;
      const bool lower = m < best_max - tol || (m <= best_max + tol && q < best_squares - tol2 &&
                                                (m < max - tol || q < squares - tol2));
      if (lower) best_max = m, best_squares = q, best = static_cast<int>(i);
    }
    s->Refresh();
    if (best < 0) return;
    Apply(ops[best], s);
    s->Refresh();
  }
}

// ----------------------------------------------------------------------------------------------
// Keeping experts where they are.

// Hosted by (worker, expert) in `slots` ([W][E] flags).
std::vector<std::vector<char>> HeldTable(const std::vector<ExpertSlot>& slots, int n_workers,
                                         int n_experts) {
  std::vector<std::vector<char>> held(n_workers, std::vector<char>(n_experts, 0));
  for (const ExpertSlot& s : slots) held[s.rank - 1][s.expert] = 1;
  return held;
}

int MovedSlots(const LayerState& s, const std::vector<std::vector<char>>& current) {
  int moved = 0;
  for (int w = 0; w < s.n_workers(); ++w) {
    for (int e = 0; e < s.n_experts(); ++e) moved += s.holds(w, e) && !current[w][e];
  }
  return moved;
}

// Renames the workers of `s` (a permutation: loads are unchanged) so that they hold as many of
// the current placement's (rank, expert) pairs as possible: an assignment problem, solved with
// the Hungarian algorithm (O(W^3)) on the cost -overlap.
LayerState Relabel(const LayerState& s, const std::vector<std::vector<char>>& current) {
  const int n = s.n_workers();
  std::vector<std::vector<double>> cost(n + 1, std::vector<double>(n + 1, 0.0));  // 1-based
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      int overlap = 0;
      for (int e = 0; e < s.n_experts(); ++e) overlap += s.holds(i, e) && current[j][e];
      cost[i + 1][j + 1] = -overlap;
    }
  }
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0);
  std::vector<int> match(n + 1, 0), way(n + 1, 0);  // match[j]: the plan worker given rank j
  for (int i = 1; i <= n; ++i) {
    match[0] = i;
    int j0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<char> used(n + 1, 0);
    do {
      used[j0] = 1;
      const int i0 = match[j0];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = cost[i0][j] - u[i0] - v[j];
        if (cur < minv[j]) minv[j] = cur, way[j] = j0;
        if (minv[j] < delta) delta = minv[j], j1 = j;
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[match[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (match[j0] != 0);
    do {
      const int j1 = way[j0];
      match[j0] = match[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  LayerState out(s);
  for (int j = 1; j <= n; ++j) {
    for (int e = 0; e < s.n_experts(); ++e) {
      if (out.holds(j - 1, e)) out.Remove(j - 1, e);
    }
  }
  for (int j = 1; j <= n; ++j) {
    for (int e : s.Hosted(match[j] - 1)) out.Add(j - 1, e);
  }
  out.Refresh();
  return out;
}

// Undoes moves while the max stays within `bound`: drops a new replica, brings a new slot back to
// a rank that held its expert (into a free slot, or swapping with one of that rank's), each step
// lowering the number of moved slots by at least one.
void KeepCurrent(const std::vector<std::vector<char>>& current, double bound, LayerState* s) {
  auto within = [&](int a, int b) {
    return s->worker_load(a) <= bound && s->worker_load(b) <= bound;
  };
  bool changed = true;
  while (changed) {
    changed = false;
    for (int w = 0; w < s->n_workers() && !changed; ++w) {
      for (int e : s->Hosted(w)) {
        if (current[w][e]) continue;
        if (s->replicas(e) > 1 && s->count(w) > 1) {
          s->Remove(w, e);
          if (s->Max() <= bound) {
            changed = true;
            break;
          }
          s->Add(w, e);
        }
        for (int c = 0; c < s->n_workers() && !changed; ++c) {
          if (!current[c][e] || s->holds(c, e)) continue;
          if (s->count(c) < s->capacity() && s->count(w) > 1) {
            const Op op{Op::kMove, w, e, c, -1};
            Apply(op, s);
            if (within(w, c)) {
              changed = true;
              break;
            }
            Undo(op, s);
          }
          for (int f : s->Hosted(c)) {
            if (s->holds(w, f) || (!current[w][f]) - (!current[c][f]) >= 1) continue;
            const Op op{Op::kSwap, w, e, c, f};
            Apply(op, s);
            if (within(w, c)) {
              changed = true;
              break;
            }
            Undo(op, s);
          }
        }
        if (changed) break;
      }
    }
    s->Refresh();
  }
}

// ----------------------------------------------------------------------------------------------
// Validation and reports.

absl::Status ValidateLoads(const std::vector<std::vector<double>>& loads) {
  if (loads.empty() || loads[0].empty())
    return absl::InvalidArgumentError("loads: no layers or no experts");
  for (size_t l = 0; l < loads.size(); ++l) {
    if (loads[l].size() != loads[0].size()) {
      return absl::InvalidArgumentError(absl::StrCat("loads: layer ", l, " has ", loads[l].size(),
                                                     " experts, layer 0 has ", loads[0].size()));
    }
    for (size_t e = 0; e < loads[l].size(); ++e) {
      if (!std::isfinite(loads[l][e]) || loads[l][e] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("loads: layer ", l, " expert ", e, " is ",
                                                       loads[l][e], " (expected a count >= 0)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSlots(const std::vector<std::vector<ExpertSlot>>& slots, int n_layers,
                           int n_experts, int n_workers, const char* what) {
  if (static_cast<int>(slots.size()) != n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", slots.size(), " layers, the loads have ", n_layers));
  }
  for (int l = 0; l < n_layers; ++l) {
    std::vector<std::vector<char>> held(n_workers, std::vector<char>(n_experts, 0));
    std::vector<char> seen(n_experts, 0);
    for (const ExpertSlot& s : slots[l]) {
      if (s.rank < 1 || s.rank > n_workers || s.expert < 0 || s.expert >= n_experts) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": layer ", l, " has a slot of expert ", s.expert, " on rank ",
                         s.rank, " (ranks 1..", n_workers, ", experts 0..", n_experts - 1, ")"));
      }
      if (held[s.rank - 1][s.expert]) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": layer ", l, " puts expert ",
                                                       s.expert, " on rank ", s.rank, " twice"));
      }
      held[s.rank - 1][s.expert] = 1;
      seen[s.expert] = 1;
    }
    for (int e = 0; e < n_experts; ++e) {
      if (!seen[e])
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": layer ", l, " has no slot for expert ", e));
    }
  }
  return absl::OkStatus();
}

LayerPlan Report(const std::vector<double>& load, std::vector<ExpertSlot> slots, int n_workers,
                 const std::vector<ExpertSlot>* current) {
  const int n_experts = static_cast<int>(load.size());
  LayerPlan p;
  std::vector<int> replicas(n_experts, 0);
  for (const ExpertSlot& s : slots) ++replicas[s.expert];
  p.worker_load.assign(n_workers, 0.0);
  for (const ExpertSlot& s : slots)
    p.worker_load[s.rank - 1] += load[s.expert] / replicas[s.expert];
  for (double x : p.worker_load) p.mean += x / n_workers;
  p.max = *std::max_element(p.worker_load.begin(), p.worker_load.end());
  p.balancedness = p.max > 0 ? p.mean / p.max : 1.0;
  p.replicas = static_cast<int>(slots.size()) - n_experts;
  if (current != nullptr && !current->empty()) {
    const auto now = HeldTable(slots, n_workers, n_experts),
               before = HeldTable(*current, n_workers, n_experts);
    for (const ExpertSlot& s : slots) p.moved_slots += !before[s.rank - 1][s.expert];
    for (int e = 0; e < n_experts; ++e) {
      bool same = true;
      for (int w = 0; w < n_workers; ++w) same = same && now[w][e] == before[w][e];
      p.moved_experts += !same;
    }
  }
  p.slots = std::move(slots);
  return p;
}

PlacementPlan Summarize(std::vector<LayerPlan> layers) {
  PlacementPlan plan;
  double means = 0.0, maxes = 0.0;
  for (const LayerPlan& l : layers) {
    means += l.mean;
    maxes += l.max;
    plan.moved_slots += l.moved_slots;
    plan.moved_experts += l.moved_experts;
  }
  plan.balancedness = maxes > 0 ? means / maxes : 1.0;
  plan.layers = std::move(layers);
  return plan;
}

// One layer: the candidates (the baseline improved and renamed; the current placement as it is
// and improved), the best max among them, then the fewest moves within keep_within of it.
std::vector<ExpertSlot> PlanLayer(const std::vector<double>& load, const PlannerOptions& o,
                                  int capacity, const std::vector<ExpertSlot>* current) {
  LayerState baseline(load, o.n_workers, capacity);
  Pack(Replicate(load, o.n_workers, capacity), &baseline);
  if (!o.improve) return baseline.Slots();
  Improve(&baseline);
  if (current == nullptr) return baseline.Slots();

  const int n_experts = static_cast<int>(load.size());
  const auto held = HeldTable(*current, o.n_workers, n_experts);
  std::vector<LayerState> candidates;
  LayerState now(load, o.n_workers, capacity);
  for (const ExpertSlot& s : *current) now.Add(s.rank - 1, s.expert);
  now.Refresh();
  bool usable = true;
  for (int w = 0; w < o.n_workers; ++w)
    usable = usable && now.count(w) >= 1 && now.count(w) <= capacity;
  if (usable) {
    candidates.push_back(now);
    Improve(&now);
    candidates.push_back(now);
  }
  candidates.push_back(Relabel(baseline, held));
  double best = std::numeric_limits<double>::infinity();
  for (const LayerState& c : candidates) best = std::min(best, c.Max());
  const double bound = best * (1.0 + o.keep_within) + Tolerance(best);
  const LayerState* chosen = nullptr;
  int chosen_moves = 0;
  for (LayerState& c : candidates) {
    if (c.Max() > bound) continue;
    KeepCurrent(held, bound, &c);
    const int moves = MovedSlots(c, held);
    if (chosen == nullptr || moves < chosen_moves ||
        (moves == chosen_moves && c.Max() < chosen->Max() - Tolerance(best))) {
      chosen = &c;
      chosen_moves = moves;
    }
  }
  MOE_CHECK(chosen != nullptr);
  return chosen->Slots();
}

}  // namespace

absl::Status PlannerOptions::Validate(int n_experts) const {
  if (n_workers < 1)
    return absl::InvalidArgumentError(absl::StrCat("workers: ", n_workers, " (need at least 1)"));
  if (n_workers > n_experts) {
    return absl::InvalidArgumentError(absl::StrCat("workers: ", n_workers, " workers for ",
                                                   n_experts,
                                                   " experts per layer: some would host nothing"));
  }
  if (slots_per_worker < 1 || static_cast<long long>(slots_per_worker) * n_workers < n_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert slots: ", slots_per_worker, " per worker x ", n_workers, " workers cannot hold ",
        n_experts, " experts (need at least ", (n_experts + n_workers - 1) / n_workers, ")"));
  }
  if (!std::isfinite(keep_within) || keep_within < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep within: ", keep_within, " (expected a fraction >= 0)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PlacementPlan> PlanPlacement(const std::vector<std::vector<double>>& loads,
                                            const PlannerOptions& options,
                                            const std::vector<std::vector<ExpertSlot>>& current) {
  MOE_RETURN_IF_ERROR(ValidateLoads(loads));
  const int n_layers = static_cast<int>(loads.size()),
            n_experts = static_cast<int>(loads[0].size());
  MOE_RETURN_IF_ERROR(options.Validate(n_experts));
  if (!current.empty()) {
    MOE_RETURN_IF_ERROR(
        ValidateSlots(current, n_layers, n_experts, options.n_workers, "current placement"));
  }
  const int capacity =
      std::min(options.slots_per_worker, n_experts);  // distinct experts per worker
  std::vector<LayerPlan> layers;
  for (int l = 0; l < n_layers; ++l) {
    const std::vector<ExpertSlot>* now = current.empty() ? nullptr : &current[l];
    layers.push_back(
        Report(loads[l], PlanLayer(loads[l], options, capacity, now), options.n_workers, now));
  }
  return Summarize(std::move(layers));
}

absl::StatusOr<PlacementPlan> EvaluatePlacement(
    const std::vector<std::vector<double>>& loads,
    const std::vector<std::vector<ExpertSlot>>& slots, int n_workers,
    const std::vector<std::vector<ExpertSlot>>& current) {
  MOE_RETURN_IF_ERROR(ValidateLoads(loads));
  const int n_layers = static_cast<int>(loads.size()),
            n_experts = static_cast<int>(loads[0].size());
  if (n_workers < 1) return absl::InvalidArgumentError("placement: need at least one worker");
  MOE_RETURN_IF_ERROR(ValidateSlots(slots, n_layers, n_experts, n_workers, "placement"));
  if (!current.empty()) {
    MOE_RETURN_IF_ERROR(
        ValidateSlots(current, n_layers, n_experts, n_workers, "current placement"));
  }
  std::vector<LayerPlan> layers;
  for (int l = 0; l < n_layers; ++l) {
    layers.push_back(
        Report(loads[l], slots[l], n_workers, current.empty() ? nullptr : &current[l]));
  }
  return Summarize(std::move(layers));
}

}  // namespace moe
