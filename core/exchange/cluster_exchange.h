// The ExpertExchange between the coordinator (rank 0) and the workers (ranks 1..W): the
// coordinator's side of the cluster protocol; the workers' side is worker/expert_server.h.
// Control messages go through a Messenger (core/exchange/messenger.h: MPI in the cluster,
// in-process ranks in tests); rows go through a DataPlane (core/exchange/data_plane.h): the
// messenger on host memory, or NCCL on GPU memory.
//
// One dispatch = one layer of one step, its rows grouped by physical expert slot (the layout,
// core/placement/expert_layout.h; slots per layer as the placement numbers them). For every
// worker, in this order:
//   coordinator -> worker  StepHeader                  (messenger, tag kHeaderTag)
//   coordinator -> worker  int64 rows per slot [S]     (messenger; counts first: the dispatch
//                                                       layout, every slot of the layer, 0 for
//                                                       others')
//   coordinator -> worker  int32 slot id per row [n]   (messenger; rows grouped by slot)
//   dispatch: coordinator -> worker  float rows, one transfer per non-empty slot   (data plane)
//   combine:  worker -> coordinator  float outputs, the same transfers reversed    (data plane)
//   worker -> coordinator  ReplyHeader                 (messenger; echoes step and layer;
//                                                       compute time)
// A worker checks that every slot with rows is one the placement gives it, and runs each with the
// weights of the logical expert the slot holds. Dispatch and combine are each one group of
// transfers over all workers (an all-to-all-v; for NCCL grouped ncclSend/ncclRecv). Rows move
// straight between the coordinator's batch, which is grouped by slot, and the worker's, so nothing
// is packed or unpacked. When the data plane cannot read the memory the rows are in (a GPU
// coordinator or worker with the host plane), they are staged through host buffers on that side,
// inside the exchange. Every wait polls with back-off instead of spinning, so idle ranks leave the
// cores to busy ones, and every wait on a worker has a deadline, so a dead or hung worker fails
// the step instead of hanging it.
//
// Live re-placement (between steps, never inside one): coordinator -> every worker a StepHeader
// with a placement command, then (kBeginPlacement only) the new slot table as int32s; every
// worker answers with a PlacementReply (tag kPlacementTag). kBeginPlacement: check the table and
// start loading the experts it adds in the background (the answer comes at once); kPollPlacement:
// loading, ready or failed; kCommitPlacement (only once every worker is ready): switch to it and
// free the experts it drops, so every rank switches at the same step boundary;
// kAbortPlacement: drop what was loaded, keep the placement in force.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/exchange/data_plane.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/exchange/expert_exchange.h"
#include "core/exchange/messenger.h"
#include "core/exchange/peer_liveness.h"
#include "core/exchange/step_messages.h"
#include "core/placement/expert_placement.h"
#include "core/placement/placement_mover.h"
#include "core/placement/placement_registry.h"

namespace moe {

struct ClusterExchangeOptions {
  // A worker that has not answered a step for this long fails it. The time includes the
  // worker's expert computation, so it must exceed the longest step: generation prefills in
  // chunks (--prefill-chunk) to keep steps short; raise it for long one-shot logits dumps.
  double worker_timeout_seconds = 10.0;
  // Set by a signal handler: the next exchange fails with Cancelled (the one in flight finishes).
  const std::atomic<bool>* stop_requested = nullptr;
  // Telemetry, both optional: told about every exchange; the epoch stamped on step headers.
  ExchangeObserver* observer = nullptr;
  const std::atomic<uint32_t>* telemetry_epoch = nullptr;
  // What the workers' report streams say of them (optional, not owned): a wait on a worker known
  // to be gone (its process or host died) fails at once, naming it, rather than at the timeout.
  const PeerLiveness* liveness = nullptr;
};

// Coordinator side. Not thread-safe: the step loop's thread only (with MPI, the one that called
// MPI_Init).
class ClusterExchange : public ExpertExchange, public PlacementMover {
 public:
  // placements: the placement in force, which this exchange dispatches by and a re-placement
  // commits to; messenger: rank 0's end of the control messages; data: this rank's data plane;
  // backend: the forward pass's, whose memory Dispatch's rows are in. None is owned.
  ClusterExchange(PlacementRegistry* placements, Messenger* messenger, DataPlane* data,
                  kernels::Backend* backend, ClusterExchangeOptions options);
  const ExpertPlacement& placement() const override { return placements_->placement(); }
  absl::Status Dispatch(const ExpertLayout& layout, const float* rows, float* out) override;
  // Overlapping micro-batches (ExpertExchange), where the data plane can keep two groups in
  // flight (host memory; with NCCL, Post dispatches at once). A worker serves steps in the order
  // they come, so A's experts run while the caller computes B's attention. Each posted exchange is
  // a step of its own (its header names the micro-batch); its wall time, in the stats and the
  // observer's record, runs from Post to Complete, so it includes whatever the caller overlapped.
  absl::Status Post(const ExpertLayout& layout, const float* rows, float* out,
                    int micro_batch) override;
  absl::Status Complete(int micro_batch) override;
  bool overlaps() const override { return can_overlap_; }
  // Tells every worker to exit its serving loop and waits (at most `timeout_seconds`) for each to
  // acknowledge; call once, at the end. Unavailable naming the first worker that did not: it is
  // stopped or gone, MPI_Finalize would wait for it forever, so the caller must abort the job.
  absl::Status Shutdown(double timeout_seconds = 5.0);

  // Live re-placement, between steps (the protocol above). Begin: every worker checks `next` and
  // starts loading; a worker's refusal aborts the others and is returned (FailedPrecondition
  // naming the rank). Poll: where loading stands; a worker's failure aborts the others and is
  // returned the same way. Commit (after Poll said ready): the registry first (its subscribers,
  // the load telemetry among them, count against `next` before any worker reports under it),
  // then every worker switches; dispatches go by `next` from the next step on. Abort: every
  // worker drops its loaded experts.
  // A worker that does not answer within --worker-timeout-s is an Unavailable error, like a
  // step's: the cluster cannot go on.
  absl::Status BeginPlacement(std::shared_ptr<const ExpertPlacement> next, uint32_t epoch) override;
  absl::StatusOr<PlacementProgress> PollPlacement() override;
  absl::Status CommitPlacement() override;
  absl::Status AbortPlacement() override;
  uint32_t placement_epoch() const { return placements_->epoch(); }
  ExchangeStats& stats() { return stats_; }

 private:
  // One exchange from its posting to its completion: what was sent, what is awaited.
  struct Flight {
    const ExpertLayout* layout = nullptr;
    int micro_batch = 0;
    int64_t step_id = 0;
    std::chrono::steady_clock::time_point start;
    std::string what;                               // "layer L exchange (step S)"
    std::vector<std::vector<int32_t>> send_ids;     // [W + 1] per worker: the slot of each row sent
    std::vector<std::vector<int64_t>> send_counts;  // [W + 1][slots] rows per slot
    std::vector<StepHeader> headers;                // [W + 1]
    std::vector<ReplyHeader> replies;               // [W + 1]
    std::unique_ptr<Transfers> control;             // headers, counts and slot ids out
    std::unique_ptr<Transfers> replies_in;          // every worker's reply
    std::unique_ptr<DataPlane::InFlight> data;      // the rows out and their outputs back
    float* device_out = nullptr;                    // staged: where the outputs go at the end
    std::vector<float> host_rows, host_out;         // [n_rows, hidden] each, staging
    bool posted = false;                            // awaiting Complete
  };
  // Each worker's share of the layout, checked, and the step headers; sends nothing.
  absl::Status Prepare(const ExpertLayout& layout, int micro_batch, Flight* f);
  // Posts the headers, counts and slot ids, and the receive of every worker's reply.
  void PostControl(Flight* f);
  // The replies checked against what was sent; stats and the observer told.
  absl::Status Finish(Flight* f);
  // The protocol above on rows and out in memory the data plane reads.
  absl::Status Exchange(const ExpertLayout& layout, const float* rows, float* out);
  // Sends `command` (and payload, if any) to every worker and collects their replies.
  absl::Status PlacementRoundTrip(StepCommand command, uint32_t epoch,
                                  const std::vector<int32_t>& payload,
                                  std::vector<PlacementReply>* replies);
  // What every wait on the workers may give up on.
  WaitLimits limits() const {
    return WaitLimits{options_.worker_timeout_seconds, nullptr, options_.liveness};
  }

  PlacementRegistry* placements_;
  std::shared_ptr<const ExpertPlacement> pending_;  // the plan begun
  uint32_t pending_epoch_ = 0;                      // the plan begun, 0: none
  Messenger* messenger_;
  DataPlane* data_;
  kernels::Backend* backend_;
  ClusterExchangeOptions options_;
  int64_t step_id_ = 0;
  ExchangeStats stats_;
  bool can_overlap_ = false;  // the data plane detaches groups (host memory)
  // [kMaxInFlight] reused across steps; Dispatch uses the first.
  Flight flights_[kMaxInFlight];
  std::vector<StepHeader> command_headers_;  // [W + 1] shutdown and placement commands
  std::vector<ReplyHeader> command_acks_;
  std::vector<double> step_compute_;  // [W + 1] this exchange's replies, for the observer
  std::vector<int64_t> step_rows_;
};

}  // namespace moe
