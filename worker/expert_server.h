// The worker's side of the cluster protocol (the coordinator's is core/exchange/cluster_exchange.h,
// which describes the messages): a serving loop that answers forward steps and placement
// commands until the coordinator shuts it down. It speaks only through a Messenger and a
// DataPlane, so tests run it on threads against in-process ranks.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/exchange/data_plane.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/exchange/expert_exchange.h"
#include "core/exchange/messenger.h"
#include "core/exchange/step_messages.h"
#include "core/placement/expert_placement.h"
#include "kernels/backend.h"

namespace moe {

// The worker's side of a live re-placement (worker/expert_reloader.h implements it): the serving
// loop hands it the placement commands, between steps.
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

struct ExpertServeOptions {
  const ExpertPlacement* placement = nullptr;  // the placement at start-up (not owned)
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
  // This rank's end of the control messages (not owned; its rank() is this worker's).
  Messenger* messenger = nullptr;
  // Where rows arrive (not owned), and the runner's backend, whose memory the runner reads (null
  // when it has none: then host memory). Rows are received straight into that memory when the
  // data plane can write there, and staged through host buffers otherwise (host plane to a GPU).
  DataPlane* data = nullptr;
  kernels::Backend* backend = nullptr;
};

// Answers forward steps with `runner` until the coordinator says shutdown (OK) or something is
// wrong (an error naming the mismatch). Every message is checked against the header.
absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& options);

}  // namespace moe
