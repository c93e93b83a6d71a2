#include "worker/expert_server.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/exchange/cluster_protocol.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::kCoordinator;
using protocol::kCountsTag;
using protocol::kHeaderTag;
using protocol::kIdsTag;
using protocol::kPlacementTag;
using protocol::kReplyTag;
using protocol::kSlotTableTag;

PlacementReply MakeReply(PlacementState state, uint32_t epoch, const absl::Status& error = {}) {
  PlacementReply reply;
  reply.magic = kPlacementMagic;
  reply.state = static_cast<int32_t>(state);
  reply.placement_epoch = epoch;
  std::snprintf(reply.error, sizeof(reply.error), "%s", std::string(error.message()).c_str());
  return reply;
}

// A wait on the coordinator during a step: it gives up first (its timeout, in the header), so the
// worker waits longer.
WaitLimits StepLimits(const StepHeader& h) { return WaitLimits{h.timeout_ms / 1e3 + 30.0}; }

// One worker's serving loop and the buffers it reuses from step to step.
class ExpertServer {
 public:
  ExpertServer(ExpertRunner* runner, const ExpertServeOptions& opt)
      : runner_(runner),
        opt_(opt),
        messenger_(opt.messenger),
        data_(opt.data),
        backend_(opt.backend),
        who_(absl::StrCat("worker rank ", opt.messenger->rank())),
        placement_(opt.placement),
        staged_(backend_ != nullptr && !data_->Reads(*backend_)),
        backend_rows_(backend_),
        backend_out_(backend_) {}

  absl::Status Run() {
    // The runner reads its backend's memory (host memory without one). The plane writes there
    // directly when it can (NCCL on the GPU, the host plane on the CPU); the host plane to a GPU
    // is staged through host buffers here.
    if ((backend_ == nullptr || staged_) && data_->device_memory()) {
      return absl::InternalError(
          absl::StrCat(who_, ": a device data plane needs the runner's backend"));
    }
    for (;;) {
      const Clock::time_point idle_start = Clock::now();
      StepHeader h;
      MOE_RETURN_IF_ERROR(NextHeader(&h));
      if (h.command == static_cast<int32_t>(StepCommand::kShutdown)) return AcknowledgeShutdown(h);
      if (h.command >= static_cast<int32_t>(StepCommand::kBeginPlacement) &&
          h.command <= static_cast<int32_t>(StepCommand::kAbortPlacement)) {
        MOE_ASSIGN_OR_RETURN(const ExpertPlacement* now, AnswerPlacement(h));
        if (now != placement_) {
          placement_ = now;
          if (opt_.observer != nullptr)
            opt_.observer->OnPlacementChanged(*placement_, h.placement_epoch);
        }
        continue;
      }
      MOE_RETURN_IF_ERROR(ServeForward(h, idle_start));
    }
  }

 private:
  // Idle: waits as long as it takes. After a signal, gives the coordinator a grace period to send
  // its shutdown, then leaves on its own.
  absl::Status NextHeader(StepHeader* h) {
    messenger_->Recv(h, sizeof(*h), Element::kByte, kCoordinator, kHeaderTag);
    std::unique_ptr<Transfers> header = messenger_->Take();
    absl::Status waited =
        header->Wait(who_ + " waiting for a step", WaitLimits{0, opt_.stop_requested});
    if (absl::IsCancelled(waited)) {
      waited = header->Wait(who_ + " waiting for the coordinator's shutdown after a signal",
                            WaitLimits{opt_.stop_grace_seconds});
    }
    MOE_RETURN_IF_ERROR(waited);
    if (absl::Status ok = CheckStepHeader(*h, last_step_); !ok.ok()) {
      return absl::InternalError(absl::StrCat(who_, ": ", ok.message()));
    }
    last_step_ = h->step_id;
    return absl::OkStatus();
  }

  // Acknowledged, so that the coordinator knows every worker is leaving with it.
  absl::Status AcknowledgeShutdown(const StepHeader& h) {
    const ReplyHeader ack{kReplyMagic, 0, h.step_id, 0, 0.0};
    messenger_->Send(&ack, sizeof(ack), Element::kByte, kCoordinator, kReplyTag);
    return messenger_->Take()->Wait(who_ + " acknowledging the shutdown",
                                    WaitLimits{opt_.stop_grace_seconds});
  }

  // Answers one placement command; returns the placement in force afterwards (the current one,
  // or the new one after a commit). Errors are protocol failures.
  absl::StatusOr<const ExpertPlacement*> AnswerPlacement(const StepHeader& h) {
    const auto command = static_cast<StepCommand>(h.command);
    PlacementSwitcher* switcher = opt_.switcher;
    PlacementReply reply = MakeReply(PlacementState::kIdle, h.placement_epoch);
    const ExpertPlacement* after = placement_;
    if (command == StepCommand::kBeginPlacement) {
      if (h.n_rows < 0 || h.n_rows > INT_MAX) {
        return absl::InternalError(absl::StrCat(who_, ": slot table of ", h.n_rows, " ints"));
      }
      std::vector<int32_t> table(static_cast<size_t>(h.n_rows));
      messenger_->Recv(table.data(), h.n_rows, Element::kInt32, kCoordinator, kSlotTableTag);
      MOE_RETURN_IF_ERROR(
          messenger_->Take()->Wait(who_ + " receiving a slot table", StepLimits(h)));
      absl::StatusOr<ExpertPlacement> next = DecodeSlotTable(
          table, placement_->n_layers(), placement_->n_experts(), placement_->n_workers());
      absl::Status begun = next.status();
      if (begun.ok()) {
        begun =
            switcher != nullptr
                ? switcher->Begin(*std::move(next), h.placement_epoch)
                : absl::UnimplementedError("this worker cannot change its experts while serving");
      }
      reply = begun.ok() ? switcher->Progress()
                         : MakeReply(PlacementState::kFailed, h.placement_epoch, begun);
    } else if (switcher == nullptr) {
      reply = MakeReply(PlacementState::kFailed, h.placement_epoch,
                        absl::FailedPreconditionError("no re-placement was begun"));
    } else if (command == StepCommand::kPollPlacement) {
      reply = switcher->Progress();
    } else if (command == StepCommand::kCommitPlacement) {
      absl::StatusOr<const ExpertPlacement*> committed = switcher->Commit();
      if (committed.ok()) {
        after = *committed;
        reply = MakeReply(PlacementState::kSwitched, h.placement_epoch);
      } else {
        reply = MakeReply(PlacementState::kFailed, h.placement_epoch, committed.status());
      }
    } else {  // kAbortPlacement
      switcher->Abort();
      reply = MakeReply(PlacementState::kIdle, h.placement_epoch);
    }
    reply.magic = kPlacementMagic;
    reply.placement_epoch = h.placement_epoch;  // the worker answers for the epoch asked about
    messenger_->Send(&reply, sizeof(reply), Element::kByte, kCoordinator, kPlacementTag);
    MOE_RETURN_IF_ERROR(
        messenger_->Take()->Wait(who_ + " answering a placement command", StepLimits(h)));
    return after;
  }

  // The step's layout: counts per slot and slot ids, checked against the header and this
  // worker's share of the placement.
  absl::Status ReceiveLayout(const StepHeader& h) {
    if (absl::Status fits = CheckForwardHeader(h, *placement_, opt_.n_layers, opt_.hidden);
        !fits.ok()) {
      return absl::InternalError(absl::StrCat(who_, ": ", fits.message()));
    }
    counts_.resize(static_cast<size_t>(h.n_slots));
    ids_.resize(static_cast<size_t>(h.n_rows));
    messenger_->Recv(counts_.data(), h.n_slots, Element::kInt64, kCoordinator, kCountsTag);
    if (h.n_rows > 0)
      messenger_->Recv(ids_.data(), h.n_rows, Element::kInt32, kCoordinator, kIdsTag);
    MOE_RETURN_IF_ERROR(messenger_->Take()->Wait(who_ + " receiving a dispatch", StepLimits(h)));
    absl::StatusOr<ExpertLayout> checked =
        ForwardLayout(h, counts_, ids_, *placement_, messenger_->rank());
    if (!checked.ok())
      return absl::InternalError(absl::StrCat(who_, ": ", checked.status().message()));
    layout_ = *std::move(checked);
    return absl::OkStatus();
  }

  // Where the runner reads (its backend's memory) and where the plane writes (the same, or host
  // buffers to stage from), sized for the step.
  absl::Status PrepareBuffers(const StepHeader& h) {
    const int64_t elements = h.n_rows * h.hidden;
    run_rows_ = run_out_ = nullptr;
    if (backend_ != nullptr) {
      if (!backend_rows_.Reserve(elements) || !backend_out_.Reserve(elements)) {
        return absl::ResourceExhaustedError(absl::StrCat(who_, ": out of ", backend_->Describe(),
                                                         " memory for ", h.n_rows, " rows"));
      }
      run_rows_ = backend_rows_.data();
      run_out_ = backend_out_.data();
    }
    wire_rows_ = run_rows_;
    wire_out_ = run_out_;
    if (backend_ == nullptr || staged_) {
      host_rows_.resize(static_cast<size_t>(elements));
      host_out_.resize(static_cast<size_t>(elements));
      wire_rows_ = host_rows_.data();
      wire_out_ = host_out_.data();
      if (backend_ == nullptr) {
        run_rows_ = wire_rows_;
        run_out_ = wire_out_;
      }
    }
    return absl::OkStatus();
  }

  // One forward step: layout, rows in, experts, outputs back, the reply, telemetry.
  absl::Status ServeForward(const StepHeader& h, Clock::time_point idle_start) {
    const Clock::time_point receive_start = Clock::now();
    MOE_RETURN_IF_ERROR(ReceiveLayout(h));
    MOE_RETURN_IF_ERROR(PrepareBuffers(h));
    const double timeout = StepLimits(h).timeout_seconds;
    const size_t bytes = static_cast<size_t>(h.n_rows * h.hidden) * sizeof(float);
    // The rows, one transfer per slot as the coordinator sends them, into one buffer.
    for (int s = 0; s < h.n_slots; ++s) {
      const int64_t at = layout_.slot_offsets[s] * h.hidden;
      if (counts_[s] > 0) data_->Recv(wire_rows_ + at, counts_[s] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data_->Flush(timeout, who_ + " receiving a dispatch", nullptr));
    if (staged_ && bytes > 0) backend_->ToDevice(run_rows_, wire_rows_, bytes);

    const Clock::time_point start = Clock::now();
    MOE_RETURN_IF_ERROR(runner_->RunExperts(layout_, run_rows_, run_out_));
    const Clock::time_point computed = Clock::now();
    if (staged_ && bytes > 0) {
      backend_->ToHost(wire_out_, run_out_, bytes);
      MOE_RETURN_IF_ERROR(backend_->Sync());
    }
    const ReplyHeader reply{kReplyMagic, h.layer, h.step_id, h.n_rows,
                            std::chrono::duration<double>(computed - start).count()};
    for (int s = 0; s < h.n_slots; ++s) {
      const int64_t at = layout_.slot_offsets[s] * h.hidden;
      if (counts_[s] > 0) data_->Send(wire_out_ + at, counts_[s] * h.hidden, kCoordinator);
    }
    MOE_RETURN_IF_ERROR(data_->Flush(timeout, who_ + " returning outputs", nullptr));
    messenger_->Send(&reply, sizeof(reply), Element::kByte, kCoordinator, kReplyTag);
    MOE_RETURN_IF_ERROR(messenger_->Take()->Wait(who_ + " returning outputs", StepLimits(h)));
    if (opt_.observer != nullptr) {
      Report(h, reply.compute_seconds,
             std::chrono::duration<double>((start - receive_start) + (Clock::now() - computed))
                 .count(),
             std::chrono::duration<double>(receive_start - idle_start).count());
    }
    return absl::OkStatus();
  }

  // Telemetry counts load per logical expert: a replicated expert's slots add up.
  void Report(const StepHeader& h, double compute_seconds, double transfer_seconds,
              double idle_seconds) {
    const double* slot_seconds = runner_->LastSlotSeconds();
    expert_rows_.assign(static_cast<size_t>(placement_->n_experts()), 0);
    expert_seconds_.assign(static_cast<size_t>(placement_->n_experts()), 0.0);
    const std::vector<ExpertSlot>& slots = placement_->slots(h.layer);
    for (int s = 0; s < h.n_slots; ++s) {
      expert_rows_[slots[s].expert] += counts_[s];
      if (slot_seconds != nullptr) expert_seconds_[slots[s].expert] += slot_seconds[s];
    }
    const int64_t n = h.n_rows;
    opt_.observer->OnWorkerStep(WorkerStepRecord{
        h.telemetry_epoch, h.step_id, h.layer, expert_rows_,
        slot_seconds != nullptr ? absl::Span<const double>(expert_seconds_)
                                : absl::Span<const double>(),
        compute_seconds, transfer_seconds, idle_seconds,
        static_cast<int64_t>(sizeof(StepHeader)) + h.n_slots * 8 + n * (4 + h.hidden * 4),
        static_cast<int64_t>(sizeof(ReplyHeader)) + n * h.hidden * 4});
  }

  ExpertRunner* runner_;
  const ExpertServeOptions& opt_;
  Messenger* messenger_;
  DataPlane* data_;
  kernels::Backend* backend_;
  const std::string who_;             // "worker rank R", for messages
  const ExpertPlacement* placement_;  // in force; changes at a committed re-placement
  const bool staged_;                 // rows pass through host buffers (host plane, GPU runner)
  int64_t last_step_ = 0;
  std::vector<int64_t> counts_;  // [slots] of the step's layer
  std::vector<int32_t> ids_;     // [rows] slot of each row
  ExpertLayout layout_;
  std::vector<int64_t> expert_rows_;    // [experts] for telemetry: slots summed per logical expert
  std::vector<double> expert_seconds_;  // [experts]
  std::vector<float> host_rows_, host_out_;                  // [rows, hidden]
  kernels::BackendArray<float> backend_rows_, backend_out_;  // [rows, hidden]
  float* run_rows_ = nullptr;                                // where the runner reads and writes
  float* run_out_ = nullptr;
  float* wire_rows_ = nullptr;  // where the data plane reads and writes
  float* wire_out_ = nullptr;
};

}  // namespace

absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& options) {
  return ExpertServer(runner, options).Run();
}

}  // namespace moe
