// The placement commands of the cluster exchange (live re-placement, core/cluster_exchange.h):
// the coordinator's round trips and the worker's answers.
#include <algorithm>
#include <climits>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/cluster_protocol.h"
#include "core/mpi_wait.h"
#include "core/status_macros.h"

namespace moe {
namespace protocol {

absl::Status CheckMessageSize(int64_t elements, const char* what) {
  if (elements > INT_MAX) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " of ", elements, " elements exceeds one MPI message; use smaller steps"));
  }
  return absl::OkStatus();
}

namespace {

PlacementReply MakeReply(PlacementState state, uint32_t epoch, const absl::Status& error = {}) {
  PlacementReply reply;
  reply.magic = kPlacementMagic;
  reply.state = static_cast<int32_t>(state);
  reply.placement_epoch = epoch;
  std::snprintf(reply.error, sizeof(reply.error), "%s", std::string(error.message()).c_str());
  return reply;
}

}  // namespace

absl::StatusOr<const ExpertPlacement*> AnswerPlacementCommand(const StepHeader& h,
                                                              const ExpertPlacement* current,
                                                              const ExpertServeOptions& opt) {
  const std::string who = absl::StrCat("worker rank ", opt.rank);
  const double timeout = h.timeout_ms / 1e3 + 30.0;
  const auto command = static_cast<StepCommand>(h.command);
  PlacementSwitcher* switcher = opt.switcher;
  PlacementReply reply = MakeReply(PlacementState::kIdle, h.placement_epoch);
  const ExpertPlacement* after = current;
  if (command == StepCommand::kBeginPlacement) {
    if (h.n_rows < 0 || h.n_rows > INT_MAX) {
      return absl::InternalError(absl::StrCat(who, ": slot table of ", h.n_rows, " ints"));
    }
    std::vector<int32_t> table(static_cast<size_t>(h.n_rows));
    std::vector<MPI_Request> requests(1);
    MPI_Irecv(table.data(), static_cast<int>(table.size()), MPI_INT32_T, kCoordinator,
              kSlotTableTag, MPI_COMM_WORLD, &requests[0]);
    MOE_RETURN_IF_ERROR(WaitAll(&requests, {kCoordinator}, timeout, who + " receiving a slot table"));
    absl::StatusOr<ExpertPlacement> next =
        DecodeSlotTable(table, current->n_layers(), current->n_experts(), current->n_workers());
    absl::Status begun = next.status();
    if (begun.ok()) {
      begun = switcher != nullptr
                  ? switcher->Begin(*std::move(next), h.placement_epoch)
                  : absl::UnimplementedError("this worker cannot change its experts while serving");
    }
    reply = begun.ok() ? switcher->Progress() : MakeReply(PlacementState::kFailed, h.placement_epoch, begun);
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
  std::vector<MPI_Request> requests(1);
  MPI_Isend(&reply, sizeof(reply), MPI_BYTE, kCoordinator, kPlacementTag, MPI_COMM_WORLD, &requests[0]);
  MOE_RETURN_IF_ERROR(WaitAll(&requests, {kCoordinator}, timeout, who + " answering a placement command"));
  return after;
}

}  // namespace protocol

using protocol::CheckMessageSize;
using protocol::kHeaderTag;
using protocol::kPlacementTag;
using protocol::kSlotTableTag;

absl::Status ClusterExchange::PlacementRoundTrip(StepCommand command, uint32_t epoch,
                                                 const std::vector<int32_t>& payload,
                                                 std::vector<PlacementReply>* replies) {
  const int n_workers = placement_->n_workers();
  replies->assign(static_cast<size_t>(n_workers) + 1, PlacementReply{});
  std::vector<MPI_Request> sends, receives;
  std::vector<int> send_peers, receive_peers;
  ++step_id_;
  for (int r = 1; r <= n_workers; ++r) {
    StepHeader& h = command_headers_[r];
    h = StepHeader{};
    h.magic = kStepMagic;
    h.command = static_cast<int32_t>(command);
    h.step_id = step_id_;
    h.n_rows = static_cast<int64_t>(payload.size());
    h.timeout_ms = static_cast<uint32_t>(std::clamp(options_.worker_timeout_seconds, 0.0, 4e6) * 1e3);
    h.placement_epoch = epoch;
    MPI_Request req;
    MPI_Isend(&h, sizeof(h), MPI_BYTE, r, kHeaderTag, MPI_COMM_WORLD, &req);
    sends.push_back(req);
    send_peers.push_back(r);
    if (!payload.empty()) {
      MPI_Isend(payload.data(), static_cast<int>(payload.size()), MPI_INT32_T, r, kSlotTableTag,
                MPI_COMM_WORLD, &req);
      sends.push_back(req);
      send_peers.push_back(r);
    }
    MPI_Irecv(&(*replies)[r], sizeof(PlacementReply), MPI_BYTE, r, kPlacementTag, MPI_COMM_WORLD, &req);
    receives.push_back(req);
    receive_peers.push_back(r);
  }
  const std::string what = absl::StrCat("placement command ", static_cast<int>(command), " (epoch ", epoch, ")");
  MOE_RETURN_IF_ERROR(WaitAll(&sends, send_peers, options_.worker_timeout_seconds, what, nullptr, options_.liveness));
  MOE_RETURN_IF_ERROR(WaitAll(&receives, receive_peers, options_.worker_timeout_seconds, what, nullptr, options_.liveness));
  for (int r = 1; r <= n_workers; ++r) {
    PlacementReply& reply = (*replies)[r];
    reply.error[sizeof(reply.error) - 1] = '\0';
    if (reply.magic != kPlacementMagic || reply.placement_epoch != epoch) {
      return absl::InternalError(absl::StrCat("worker rank ", r, " answered ", what,
                                              " for epoch ", reply.placement_epoch, " (protocol mismatch)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ClusterExchange::BeginPlacement(std::shared_ptr<const ExpertPlacement> next,
                                             uint32_t epoch) {
  if (pending_epoch_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat("re-placement to epoch ", pending_epoch_, " is still loading"));
  }
  if (next == nullptr || next->n_workers() != placement_->n_workers() ||
      next->n_layers() != placement_->n_layers() || next->n_experts() != placement_->n_experts() ||
      epoch <= placement_epoch_) {
    return absl::InvalidArgumentError("the new placement does not fit this cluster");
  }
  const std::vector<int32_t> table = EncodeSlotTable(*next);
  MOE_RETURN_IF_ERROR(CheckMessageSize(static_cast<int64_t>(table.size()), "a slot table"));
  std::vector<PlacementReply> replies;
  MOE_RETURN_IF_ERROR(PlacementRoundTrip(StepCommand::kBeginPlacement, epoch, table, &replies));
  pending_epoch_ = epoch;
  pending_ = std::move(next);
  for (int r = 1; r <= placement_->n_workers(); ++r) {
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
  MOE_RETURN_IF_ERROR(PlacementRoundTrip(StepCommand::kPollPlacement, pending_epoch_, {}, &replies));
  PlacementProgress progress;
  for (int r = 1; r <= placement_->n_workers(); ++r) {
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
  MOE_RETURN_IF_ERROR(PlacementRoundTrip(StepCommand::kCommitPlacement, epoch, {}, &replies));
  for (int r = 1; r <= placement_->n_workers(); ++r) {
    if (replies[r].state != static_cast<int32_t>(PlacementState::kSwitched)) {
      // Some workers may have switched: the ranks no longer agree, and only a restart mends that.
      return absl::InternalError(absl::StrCat("worker rank ", r, " did not switch to placement epoch ",
                                              epoch, ": ", replies[r].error));
    }
  }
  committed_ = std::move(pending_);
  placement_ = committed_.get();
  placement_epoch_ = epoch;
  pending_epoch_ = 0;
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
