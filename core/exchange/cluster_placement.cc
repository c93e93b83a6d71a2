// The placement commands of the cluster exchange (live re-placement,
// core/exchange/cluster_exchange.h): the coordinator's round trips. The workers' answers are in
// worker/expert_server.cc.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/exchange/cluster_exchange.h"
#include "core/exchange/cluster_protocol.h"

namespace moe {

using protocol::CheckMessageSize;
using protocol::kHeaderTag;
using protocol::kPlacementTag;
using protocol::kSlotTableTag;

absl::Status ClusterExchange::PlacementRoundTrip(StepCommand command, uint32_t epoch,
                                                 const std::vector<int32_t>& payload,
                                                 std::vector<PlacementReply>* replies) {
  const int n_workers = placement().n_workers();
  replies->assign(static_cast<size_t>(n_workers) + 1, PlacementReply{});
  ++step_id_;
  for (int r = 1; r <= n_workers; ++r) {
    StepHeader& h = command_headers_[r];
    h = StepHeader{};
    h.magic = kStepMagic;
    h.command = static_cast<int32_t>(command);
    h.step_id = step_id_;
    h.n_rows = static_cast<int64_t>(payload.size());
    h.timeout_ms =
        static_cast<uint32_t>(std::clamp(options_.worker_timeout_seconds, 0.0, 4e6) * 1e3);
    h.placement_epoch = epoch;
    messenger_->Send(&h, sizeof(h), Element::kByte, r, kHeaderTag);
    if (!payload.empty()) {
      messenger_->Send(payload.data(), static_cast<int64_t>(payload.size()), Element::kInt32, r,
                       kSlotTableTag);
    }
  }
  std::unique_ptr<Transfers> sends = messenger_->Take();
  for (int r = 1; r <= n_workers; ++r) {
    messenger_->Recv(&(*replies)[r], sizeof(PlacementReply), Element::kByte, r, kPlacementTag);
  }
  std::unique_ptr<Transfers> receives = messenger_->Take();
  const std::string what =
      absl::StrCat("placement command ", static_cast<int>(command), " (epoch ", epoch, ")");
  MOE_RETURN_IF_ERROR(sends->Wait(what, limits()));
  MOE_RETURN_IF_ERROR(receives->Wait(what, limits()));
  for (int r = 1; r <= n_workers; ++r) {
    PlacementReply& reply = (*replies)[r];
    reply.error[sizeof(reply.error) - 1] = '\0';
    if (reply.magic != kPlacementMagic || reply.placement_epoch != epoch) {
      return absl::InternalError(absl::StrCat("worker rank ", r, " answered ", what, " for epoch ",
                                              reply.placement_epoch, " (protocol mismatch)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ClusterExchange::BeginPlacement(std::shared_ptr<const ExpertPlacement> next,
                                             uint32_t epoch) {
  if (pending_epoch_ != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("re-placement to epoch ", pending_epoch_, " is still loading"));
  }
  if (next == nullptr || next->n_workers() != placement().n_workers() ||
      next->n_layers() != placement().n_layers() || next->n_experts() != placement().n_experts() ||
      epoch <= placements_->epoch()) {
    return absl::InvalidArgumentError("the new placement does not fit this cluster");
  }
  const std::vector<int32_t> table = EncodeSlotTable(*next);
  MOE_RETURN_IF_ERROR(CheckMessageSize(static_cast<int64_t>(table.size()), "a slot table"));
  std::vector<PlacementReply> replies;
  MOE_RETURN_IF_ERROR(PlacementRoundTrip(StepCommand::kBeginPlacement, epoch, table, &replies));
  pending_epoch_ = epoch;
  pending_ = std::move(next);
  for (int r = 1; r <= placement().n_workers(); ++r) {
    if (replies[r].state == static_cast<int32_t>(PlacementState::kFailed)) {
      MOE_RETURN_IF_ERROR(AbortPlacement());
      return absl::FailedPreconditionError(
          absl::StrCat("worker rank ", r, " refused the new placement: ", replies[r].error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PlacementProgress> ClusterExchange::PollPlacement() {
  if (pending_epoch_ == 0) return absl::FailedPreconditionError("no re-placement is loading");
  std::vector<PlacementReply> replies;
  MOE_RETURN_IF_ERROR(
      PlacementRoundTrip(StepCommand::kPollPlacement, pending_epoch_, {}, &replies));
  PlacementProgress progress;
  for (int r = 1; r <= placement().n_workers(); ++r) {
    const PlacementReply& reply = replies[r];
    if (reply.state == static_cast<int32_t>(PlacementState::kFailed)) {
      MOE_RETURN_IF_ERROR(AbortPlacement());
      return absl::FailedPreconditionError(
          absl::StrCat("worker rank ", r, " could not load its new experts: ", reply.error));
    }
    progress.loading += reply.state != static_cast<int32_t>(PlacementState::kReady);
    progress.experts_loaded += reply.experts_loaded;
    progress.load_seconds = std::max(progress.load_seconds, reply.load_seconds);
  }
  progress.ready = progress.loading == 0;
  return progress;
}

absl::Status ClusterExchange::CommitPlacement() {
  if (pending_epoch_ == 0) return absl::FailedPreconditionError("no re-placement is loading");
  std::vector<PlacementReply> replies;
  const uint32_t epoch = pending_epoch_;
  pending_epoch_ = 0;
  placements_->Commit(std::move(pending_), epoch);
  MOE_RETURN_IF_ERROR(PlacementRoundTrip(StepCommand::kCommitPlacement, epoch, {}, &replies));
  for (int r = 1; r <= placement().n_workers(); ++r) {
    if (replies[r].state != static_cast<int32_t>(PlacementState::kSwitched)) {
      // Some workers may have switched: the ranks no longer agree, and only a restart mends that.
      return absl::InternalError(absl::StrCat(
          "worker rank ", r, " did not switch to placement epoch ", epoch, ": ", replies[r].error));
    }
  }
  return absl::OkStatus();
}

absl::Status ClusterExchange::AbortPlacement() {
  if (pending_epoch_ == 0) return absl::OkStatus();
  std::vector<PlacementReply> replies;
  const uint32_t epoch = pending_epoch_;
  pending_epoch_ = 0;
  pending_.reset();
  return PlacementRoundTrip(StepCommand::kAbortPlacement, epoch, {}, &replies);
}

}  // namespace moe
