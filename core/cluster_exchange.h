// The ExpertExchange between the coordinator (rank 0) and the workers (ranks 1..W), and the
// worker's side of the same protocol. Control messages go over MPI on the host; rows go through a
// DataPlane (core/data_plane.h): MPI on host memory, or NCCL on GPU memory.
//
// One dispatch = one layer of one step, its rows grouped by physical expert slot (the layout,
// core/expert_layout.h; slots per layer as the placement numbers them). For every worker, in
// this order:
//   coordinator -> worker  StepHeader                   (MPI, tag kHeaderTag)
//   coordinator -> worker  int64 rows per slot [S]      (MPI; counts first: the dispatch layout,
//                                                         every slot of the layer, 0 for others')
//   coordinator -> worker  int32 slot id per row [n]    (MPI; rows grouped by slot)
//   dispatch: coordinator -> worker  float rows, one transfer per non-empty slot   (data plane)
//   combine:  worker -> coordinator  float outputs, the same transfers reversed    (data plane)
//   worker -> coordinator  ReplyHeader                  (MPI; echoes step and layer; compute time)
// A worker checks that every slot with rows is one the placement gives it, and runs each with the
// weights of the logical expert the slot holds. Dispatch and combine are each one group of
// transfers over all workers (an all-to-all-v; for NCCL grouped ncclSend/ncclRecv). Rows move
// straight between the coordinator's batch, which is grouped by slot, and the worker's, so nothing
// is packed or unpacked. When the data plane cannot read the memory the rows are in (a GPU
// coordinator or worker with the MPI plane), they are staged through host buffers on that side,
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

#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data_plane.h"
#include "core/exchange_telemetry.h"
#include "core/expert_exchange.h"
#include "core/expert_placement.h"
#include "core/peer_liveness.h"
#include "core/placement_mover.h"
#include "core/step_messages.h"

namespace moe {

// The worker's side of a live re-placement (core/expert_reloader.h implements it): ServeExperts
// hands it the placement commands, between steps.
class PlacementSwitcher {
 public:
  virtual ~PlacementSwitcher() = default;
  // Starts loading what `next` adds to this rank, in the background. An error refuses the plan
  // (nothing started).
  virtual absl::Status Begin(ExpertPlacement next, uint32_t epoch) = 0;
  // kLoading, kReady or kFailed (with the error) for the plan begun; kIdle when none.
  virtual PlacementReply Progress() = 0;
  // Makes the plan current (REQUIRES: Progress() is kReady) and returns it; the switcher owns it.
  virtual absl::StatusOr<const ExpertPlacement*> Commit() = 0;
  // Drops the plan begun and whatever it loaded; the placement in force stays.
  virtual void Abort() = 0;
};

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

// Coordinator side. Not thread-safe: the step loop's thread only, the one that called MPI_Init.
class ClusterExchange : public ExpertExchange, public PlacementMover {
 public:
  // data: this rank's data plane; backend: the forward pass's, whose memory Dispatch's rows are
  // in. Neither is owned.
  ClusterExchange(const ExpertPlacement* placement, DataPlane* data, kernels::Backend* backend,
                  ClusterExchangeOptions options);
  const ExpertPlacement& placement() const override { return *placement_; }
  absl::Status Dispatch(const ExpertLayout& layout, const float* rows, float* out) override;
  // Overlapping micro-batches (ExpertExchange), where the data plane can keep two groups in
  // flight (MPI; with NCCL, Post dispatches at once). A worker serves steps in the order they
  // come, so A's experts run while the caller computes B's attention. Each posted exchange is a
  // step of its own (its header names the micro-batch); its wall time, in the stats and the
  // observer's record, runs from Post to Complete, so it includes whatever the caller overlapped.
  absl::Status Post(const ExpertLayout& layout, const float* rows, float* out, int micro_batch) override;
  absl::Status Complete(int micro_batch) override;
  bool overlaps() const override { return can_overlap_; }
  // Tells every worker to exit its serving loop and waits (at most `timeout_seconds`) for each to
  // acknowledge; call once, at the end. Unavailable naming the first worker that did not: it is
  // stopped or gone, MPI_Finalize would wait for it forever, so the caller must abort the job.
  absl::Status Shutdown(double timeout_seconds = 5.0);

  // Live re-placement, between steps (the protocol above). Begin: every worker checks `next` and
  // starts loading; a worker's refusal aborts the others and is returned (FailedPrecondition
  // naming the rank). Poll: where loading stands; a worker's failure aborts the others and is
  // returned the same way. Commit (after Poll said ready): every worker switches and this exchange
  // dispatches by `next` from the next step on. Abort: every worker drops its loaded experts.
  // A worker that does not answer within --worker-timeout-s is an Unavailable error, like a
  // step's: the cluster cannot go on.
  absl::Status BeginPlacement(std::shared_ptr<const ExpertPlacement> next, uint32_t epoch) override;
  absl::StatusOr<PlacementProgress> PollPlacement() override;
  absl::Status CommitPlacement() override;
  absl::Status AbortPlacement() override;
  uint32_t placement_epoch() const { return placement_epoch_; }
  ExchangeStats& stats() { return stats_; }

 private:
  // One exchange from its posting to its completion: what was sent, what is awaited.
  struct Flight {
    const ExpertLayout* layout = nullptr;
    int micro_batch = 0;
    int64_t step_id = 0;
    std::chrono::steady_clock::time_point start;
    std::string what;                                // "layer L exchange (step S)"
    std::vector<std::vector<int32_t>> send_ids;      // [W + 1] per worker: the slot of each row sent
    std::vector<std::vector<int64_t>> send_counts;   // [W + 1][slots] rows per slot
    std::vector<StepHeader> headers;                 // [W + 1]
    std::vector<ReplyHeader> replies;                // [W + 1]
    std::vector<MPI_Request> control, reply_requests;
    std::vector<int> control_peers, reply_peers;
    std::unique_ptr<DataPlane::InFlight> data;       // the rows out and their outputs back
    float* device_out = nullptr;                     // staged: where the outputs go at the end
    std::vector<float> host_rows, host_out;          // [n_rows, hidden] each, staging
    bool posted = false;                             // awaiting Complete
  };
  // Each worker's share of the layout, checked, and the step headers; touches no MPI.
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

  const ExpertPlacement* placement_;
  std::shared_ptr<const ExpertPlacement> committed_;  // placement_ after a re-placement
  std::shared_ptr<const ExpertPlacement> pending_;    // the plan begun
  uint32_t placement_epoch_ = 1;
  uint32_t pending_epoch_ = 0;  // the plan begun, 0: none
  DataPlane* data_;
  kernels::Backend* backend_;
  ClusterExchangeOptions options_;
  int64_t step_id_ = 0;
  ExchangeStats stats_;
  bool can_overlap_ = false;  // the data plane detaches groups (MPI)
  // [kMaxInFlight] reused across steps; Dispatch uses the first.
  Flight flights_[kMaxInFlight];
  std::vector<StepHeader> command_headers_;  // [W + 1] shutdown and placement commands
  std::vector<ReplyHeader> command_acks_;
  std::vector<double> step_compute_;  // [W + 1] this exchange's replies, for the observer
  std::vector<int64_t> step_rows_;
};

struct ExpertServeOptions {
  int rank = 0;                        // this worker's MPI rank
  const ExpertPlacement* placement = nullptr;
  int n_layers = 0;
  int64_t hidden = 0;
  // Set by a signal handler: the worker then waits at most `stop_grace_seconds` more for the
  // coordinator's shutdown before giving up on its own.
  const std::atomic<bool>* stop_requested = nullptr;
  // Long enough for the coordinator to finish a layer of attention and send the shutdown.
  double stop_grace_seconds = 30.0;
  // Told about every step answered (optional), per logical expert (the sum of its slots here).
  WorkerStepObserver* observer = nullptr;
  // Live re-placement (optional, not owned): without one a worker refuses placement commands.
  PlacementSwitcher* switcher = nullptr;
  // Where rows arrive (not owned), and the runner's backend, whose memory the runner reads (null
  // when it has none: then host memory). Rows are received straight into that memory when the
  // data plane can write there, and staged through host buffers otherwise (MPI to a GPU).
  DataPlane* data = nullptr;
  kernels::Backend* backend = nullptr;
};

// Worker side: answers forward steps with `runner` until the coordinator says shutdown (OK) or
// something is wrong (an error naming the mismatch). Every message is checked against the header.
absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& options);

}  // namespace moe
