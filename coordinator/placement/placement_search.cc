#include "coordinator/placement/placement_search.h"

#include <limits>

#include "core/base/status_macros.h"

namespace moe::placement {

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

namespace {

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

}  // namespace

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

}  // namespace moe::placement
