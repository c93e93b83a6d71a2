// The control messages of the cluster exchange (core/exchange/cluster_exchange.h) as the wire
// carries them, and the checks a worker makes of what it receives before it trusts it: the step
// header, a forward step's counts and slot ids, a placement command's slot table. No MPI here, so
// tests and fuzzers reach every check.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/placement/expert_layout.h"
#include "core/placement/expert_placement.h"

namespace moe {

inline constexpr uint32_t kStepMagic = 0x4d6f4553;       // "MoES"
inline constexpr uint32_t kReplyMagic = 0x4d6f4552;      // "MoER"
inline constexpr uint32_t kPlacementMagic = 0x4d6f4550;  // "MoEP"

enum class StepCommand : int32_t {
  kForward = 1,
  kShutdown = 2,
  kBeginPlacement = 3,
  kPollPlacement = 4,
  kCommitPlacement = 5,
  kAbortPlacement = 6,
};

struct StepHeader {
  uint32_t magic = 0;   // kStepMagic: a stray or misaligned message is caught at once
  int32_t command = 0;  // StepCommand
  int64_t step_id = 0;  // 1, 2, 3, ... one per exchange, never repeats
  int32_t layer = 0;
  int32_t n_slots = 0;  // slots of this layer, all ranks': the length of the counts message
  int64_t n_rows = 0;   // rows for this worker
  int64_t hidden = 0;
  // Telemetry epoch (ResetLoad): workers zero their load counters when it changes, so resets fall
  // on the same step boundary on every rank. No telemetry data rides the data plane.
  uint32_t telemetry_epoch = 0;
  // The coordinator's --worker-timeout-s, in ms: a worker waits that long plus a margin for the
  // rest of a step, so it never gives up on a step before the coordinator does (with NCCL, one
  // worker's transfers can wait on a slower worker's).
  uint32_t timeout_ms = 0;
  // Placement commands: the epoch of the placement they are about (1 at start-up, +1 per
  // switch); kBeginPlacement's n_rows is the length of the slot table that follows, in int32s.
  uint32_t placement_epoch = 0;
  // kForward: which of the step's micro-batches this exchange carries (0, or 0 and 1 when two
  // overlap); workers serve exchanges in the order they come either way. (It fills what was the
  // struct's tail padding: the header's size and layout are unchanged.)
  uint32_t micro_batch = 0;
};
static_assert(sizeof(StepHeader) == 56, "the step header's wire size");

struct ReplyHeader {
  uint32_t magic = 0;
  int32_t layer = 0;
  int64_t step_id = 0;
  int64_t n_rows = 0;
  double compute_seconds = 0;  // the worker's expert time for this step
};

// A worker's answer to a placement command.
enum class PlacementState : int32_t {
  kIdle = 0,
  kLoading = 1,
  kReady = 2,
  kFailed = 3,
  kSwitched = 4
};

struct PlacementReply {
  uint32_t magic = 0;
  int32_t state = 0;             // PlacementState
  uint32_t placement_epoch = 0;  // the epoch the state is about
  int32_t experts_loaded = 0;    // (layer, expert) pairs loaded for it so far
  double load_seconds = 0;       // how long loading took (so far)
  char error[256] = {};          // kFailed: why, NUL-terminated
};

// What a worker checks of every header before acting on it: the magic, and a step id above the
// last one it served (steps never repeat). InvalidArgument saying what is wrong.
absl::Status CheckStepHeader(const StepHeader& h, int64_t last_step_id);

// A kForward header fits this model and placement: a layer both have, the layer's slot count,
// the model's width, 0 <= rows and rows x width within one MPI message. InvalidArgument naming
// the header's fields otherwise.
absl::Status CheckForwardHeader(const StepHeader& h, const ExpertPlacement& placement, int n_layers,
                                int64_t hidden);

// The layout of a forward step from its counts message ([h.n_slots] rows per slot) and ids
// message ([h.n_rows] slot of each row), checked: counts that are not negative and add up to the
// header's rows, every slot with rows hosted by `rank`, each row labelled with its slot.
// REQUIRES: CheckForwardHeader(h) passed. InvalidArgument or FailedPrecondition naming the fault.
absl::StatusOr<ExpertLayout> ForwardLayout(const StepHeader& h, absl::Span<const int64_t> counts,
                                           absl::Span<const int32_t> ids,
                                           const ExpertPlacement& placement, int rank);

// A placement command's slot table: L, then per layer its slot count and (rank, expert) per slot.
std::vector<int32_t> EncodeSlotTable(const ExpertPlacement& placement);
// Back into a placement of the given shape, validated like any placement
// (ExpertPlacement::FromSlots).
absl::StatusOr<ExpertPlacement> DecodeSlotTable(absl::Span<const int32_t> table, int n_layers,
                                                int n_experts, int n_workers);

}  // namespace moe
