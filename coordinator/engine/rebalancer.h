// Rebalancer: live expert re-placement driven by the load telemetry.
//
// Deciding: from the aggregator's sliding window of per-(layer, expert) loads, the planner
// (coordinator/placement/placement_planner.h) computes a placement for the slot budget that starts
// from the one in force, so that few experts move. It is skipped when the window is empty, when
// worker balancedness on those loads is already at or above the threshold (unless forced), when the
// plan is the placement in force, or when it would gain less than `min_gain`.
//
// Moving: the step loop calls Tick() between steps. A decision begins the move (every worker
// starts loading the experts it gains, in the background, from its own mapping of the checkpoint);
// later Ticks poll; once every worker is ready, one Tick switches every rank at that step boundary
// (the commit round trip is the only pause) through the placement registry, and the aggregator
// starts a new telemetry epoch. A
// worker that cannot load fails the move: every worker drops what it loaded, the placement in
// force stays, and the failure is recorded (telemetry, the log, the requester's status). Requests
// in flight never notice either way: results do not depend on placement.
//
// Threads: Tick on the engine thread only; Plan and Request from any thread (gRPC).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/placement/placement_planner.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "core/placement/placement_mover.h"
#include "core/placement/placement_registry.h"

namespace moe {

struct RebalanceOptions {
  double interval_seconds = 0;  // --rebalance-interval-s: check this often (0: on request only)
  double threshold = 0.95;      // --rebalance-threshold: skip when worker balancedness >= this
  double min_gain = 0.01;       // skip a plan that raises predicted balancedness by less
  int slots_per_worker = 0;     // S (--expert-slots); 0: ceil(E / W), re-placement without replicas
  double keep_within = 0.01;    // the planner's: prefer fewer moves within 1% of the best plan
  // How often a Tick asks loading workers how far they are (a round trip to every worker).
  double poll_interval_seconds = 0.02;
  std::function<double()> now_seconds;  // monotonic clock; default steady_clock (tests fake it)
};

// A decision: the plan and what it predicts, or why there is none.
struct RebalancePlan {
  std::string skipped;                               // non-empty: nothing to do, and why
  std::shared_ptr<const ExpertPlacement> placement;  // the plan (null when skipped before planning)
  double balancedness_before = 1;  // the placement in force on the window's loads (even split)
  double predicted_balancedness = 1;
  int moved_slots = 0;
  int moved_experts = 0;
  int replicas = 0;  // slots beyond one per expert, all layers
};

struct RebalanceOutcome {
  RebalancePlan plan;
  bool applied = false;
  Rearrangement record;  // when applied (or failed)
};

class Rebalancer {
 public:
  // aggregator, mover, placements (the placement in force, which the mover commits to): not
  // owned. n_workers, n_experts: the cluster's.
  Rebalancer(LoadAggregator* aggregator, PlacementMover* mover, const PlacementRegistry* placements,
             int n_workers, int n_experts, RebalanceOptions options);
  // The placement in force (for the Rebalance RPC's answer).
  const PlacementRegistry& placements() const { return *placements_; }

  // Any thread: what a re-placement now would do; changes nothing. force: ignore the threshold
  // and min_gain.
  absl::StatusOr<RebalancePlan> Plan(bool force) const;

  // Any thread: plans, hands the plan to the engine thread and waits until it is applied or
  // failed, or until `deadline` (DeadlineExceeded; the move goes on). Aborted when a move is
  // already under way; FailedPrecondition when a worker could not load (the old placement stays).
  absl::StatusOr<RebalanceOutcome> Request(bool force, absl::Time deadline);

  // Engine thread, between steps. Errors are the cluster's (a worker that does not answer): the
  // engine must stop. A worker's failure to load is not an error here.
  absl::Status Tick();
  // Engine thread, when serving ends: a move under way is dropped (the workers told, when
  // cluster_usable), a waiting Request returns, and later ones are refused.
  void Stop(bool cluster_usable);

 private:
  struct Move {
    RebalancePlan plan;
    std::string trigger;
    double started = 0;
    double measured_before = 0;
    uint32_t epoch = 0;
    double last_poll = 0;
  };
  double Now() const { return options_.now_seconds(); }
  // The outcome of `move` before it ends: its plan, trigger, epoch and predictions; the caller
  // adds how it ended.
  static RebalanceOutcome OutcomeOf(const Move& move);
  // Begins `plan` (engine thread); a failure to begin is recorded like a failed move.
  absl::Status Begin(RebalancePlan plan, std::string trigger);
  void Finish(RebalanceOutcome outcome);
  bool busy() const;

  LoadAggregator* aggregator_;
  PlacementMover* mover_;
  const PlacementRegistry* placements_;
  const int n_workers_;
  const int n_experts_;
  const RebalanceOptions options_;
  double last_check_;

  std::optional<Move> move_;  // engine thread only

  mutable absl::Mutex mu_;
  std::optional<RebalancePlan> requested_ ABSL_GUARDED_BY(mu_);  // handed to the engine thread
  bool busy_ ABSL_GUARDED_BY(mu_) = false;                       // a request or move under way
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t finished_ ABSL_GUARDED_BY(mu_) = 0;  // moves finished (or refused)
  RebalanceOutcome last_ ABSL_GUARDED_BY(mu_);
  absl::Status last_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe
