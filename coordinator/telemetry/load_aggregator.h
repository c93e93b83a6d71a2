// LoadAggregator: the coordinator's picture of expert load. It merges three sources:
//  - the routing of every forward step (it is a RoutingObserver): per (layer, expert) token-choices
//    since reset and over a sliding window, per-worker load as the dispatch plan gave it out
//    (replicas included: PlanDispatch replayed on the same routing), temporal locality, and all of
//    it per workload label (the sequences' starts say which request has which);
//  - every exchange (an ExchangeObserver): the straggler cost, from each worker's compute time;
//  - the workers' own reports, arriving over gRPC (OnWorkerReport).
// Snapshot() turns them into the LoadSnapshot (core/exchange/load_telemetry.h) that GetLoad,
// WatchLoad, moe-cli load and the Prometheus endpoint all show; the gRPC service converts it to
// protobuf.
//
// Threads: OnStepBegin/OnForward/OnStepEnd/OnExchange/OnSequenceStart/OnSequenceEnd come from the
// engine thread; OnWorkerReport, Snapshot and Reset from gRPC threads. One mutex, held for
// O(tokens x layers) counting per step; the engine never waits on I/O here.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/inference/moe_routing.h"
#include "coordinator/inference/routing_observer.h"
#include "coordinator/telemetry/label_loads.h"
#include "coordinator/telemetry/load_window.h"
#include "coordinator/telemetry/worker_liveness.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/exchange/load_telemetry.h"
#include "core/placement/expert_placement.h"
#include "core/placement/placement_registry.h"

namespace moe {

struct LoadAggregatorOptions {
  int n_layers = 0;
  int n_experts = 0;
  int top_k = 0;
  const ExpertPlacement* placement = nullptr;  // at start-up (not owned); null: a single process
  int expert_slots = 0;                        // the slot budget, for PlacementInfo
  double window_seconds = 60;                  // the sliding window (--load-window-s)
  double report_interval_seconds = 0.5;        // workers' report interval (heartbeat)
  std::function<double()> now_seconds;         // monotonic clock; default steady_clock (tests fake it)
  // Told of every report accepted, and read for the snapshot's per-worker liveness (not owned;
  // null: workers show as never alive).
  WorkerLiveness* liveness = nullptr;
};

class LoadAggregator : public RoutingObserver,
                       public ExchangeObserver,
                       public PlacementRegistry::Subscriber {
 public:
  explicit LoadAggregator(LoadAggregatorOptions options);

  void OnStepBegin() override;
  void OnForward(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) override;
  void OnStepEnd() override;
  void OnSequenceStart(uint64_t sequence_id, const SequenceInfo& info) override;
  void OnSequenceEnd(uint64_t sequence_id) override;
  void OnExchange(const ExchangeRecord& record) override;

  // Keeps the latest report of each worker. INVALID_ARGUMENT, keeping nothing, for a report that
  // cannot be a worker's: a rank outside 1..W, experts that rank does not host, negative counts,
  // times or bytes, non-finite times. Stale reports (an older sequence number on the same stream)
  // are ignored.
  // stream: which report stream it came on (the service numbers them). Sequence numbers order
  // reports within one stream only, so a forged stream cannot push them past the real worker's.
  absl::Status OnWorkerReport(const WorkerReport& report, uint64_t stream = 0);

  // Zeroes everything now if no step is running, else when the running one ends; returns the new
  // epoch. Workers follow when their next step header carries it.
  uint32_t Reset();
  LoadSnapshot Snapshot() const;

  // Live re-placement. A commit of the placement registry (subscribed; the engine thread, between
  // steps, before any worker switches) makes `placement` the one counted against and starts a new
  // telemetry epoch at once, atomically: per-worker counts mean something under one placement
  // only, and worker reports still counting the old one (an older epoch) are kept for liveness
  // alone. The Rebalancer then records the move (RecordRearrangement), or one that failed
  // (RecordFailedRearrangement).
  void OnPlacementCommitted(const std::shared_ptr<const ExpertPlacement>& placement,
                            uint32_t epoch) override;
  void RecordRearrangement(Rearrangement done);
  void RecordFailedRearrangement(Rearrangement failed);
  void SetRearrangementInProgress(bool in_progress);
  // The placement it counts against: the registry's, as of the last commit it was told of.
  std::shared_ptr<const ExpertPlacement> placement() const;
  // [layer][expert] token-choices in the sliding window: what the planner balances.
  std::vector<std::vector<double>> WindowLoads() const;

  // The epoch to stamp on step headers (ClusterExchangeOptions::telemetry_epoch); changes only
  // between steps.
  const std::atomic<uint32_t>* epoch() const { return &epoch_; }

 private:
  struct Previous {  // a sequence's last routed token, for temporal locality
    int32_t position = 0;
    std::vector<int32_t> experts;  // [layers * top_k]
  };
  struct WorkerState {
    WorkerReport last;
    int64_t reports = 0;  // accepted; 0: `last` is empty
    uint64_t stream = 0;  // the stream `last` came on
  };

  void ApplyResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  LoadSnapshot SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double Now() const { return options_.now_seconds(); }

  const LoadAggregatorOptions options_;
  const int n_workers_;
  const double start_;
  std::atomic<uint32_t> epoch_{1};

  mutable absl::Mutex mu_;
  bool in_step_ ABSL_GUARDED_BY(mu_) = false;
  bool reset_pending_ ABSL_GUARDED_BY(mu_) = false;
  double reset_at_ ABSL_GUARDED_BY(mu_);
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> expert_tokens_ ABSL_GUARDED_BY(mu_);  // [layers * E]
  std::vector<int64_t> worker_tokens_ ABSL_GUARDED_BY(mu_);  // [layers * (W + 1)] rows per rank
  DispatchPlan plan_ ABSL_GUARDED_BY(mu_);  // reused: the replayed plan of one layer
  Routing group_routing_ ABSL_GUARDED_BY(mu_);  // one micro-batch's rows, for the replay
  LoadWindow window_ ABSL_GUARDED_BY(mu_);  // the counts since reset, over the sliding window
  LabelLoads labels_ ABSL_GUARDED_BY(mu_);  // the counts since reset, per workload label
  // Locality per layer: pairs, first-choice repeats, set overlaps.
  std::vector<int64_t> pairs_ ABSL_GUARDED_BY(mu_);     // [layers]
  std::vector<int64_t> repeats_ ABSL_GUARDED_BY(mu_);   // [layers]
  std::vector<int64_t> overlaps_ ABSL_GUARDED_BY(mu_);  // [layers]
  LoadCounters before_reset_ ABSL_GUARDED_BY(mu_);  // the counters of the epochs before this one
  absl::flat_hash_map<uint64_t, Previous> previous_ ABSL_GUARDED_BY(mu_);
  std::vector<double> straggler_ ABSL_GUARDED_BY(mu_);  // [layers]
  double exchange_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t exchanges_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<WorkerState> workers_ ABSL_GUARDED_BY(mu_);  // [W + 1] by rank
  std::shared_ptr<const ExpertPlacement> placement_ ABSL_GUARDED_BY(mu_);  // null: single process
  PlacementInfo placement_info_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe
