#include "coordinator/server/telemetry_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/server/telemetry_proto.h"

namespace moe {

grpc::Status TelemetryService::GetLoad(grpc::ServerContext* context, const moe::v1::GetLoadRequest*,
                                       moe::v1::LoadSnapshot* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok())
    return denied;
  *response = Visible(*context, LoadSnapshotToProto(aggregator_->Snapshot()));
  return grpc::Status::OK;
}

// The workers' host names map the cluster's network for an attacker: only administrators see them.
moe::v1::LoadSnapshot TelemetryService::Visible(const grpc::ServerContext& context,
                                                moe::v1::LoadSnapshot s) const {
  if (!authorizer_.Check(context, CallRole::kAdmin).ok()) {
    for (moe::v1::WorkerLoad& w : *s.mutable_workers()) w.clear_host();
  }
  return s;
}

grpc::Status TelemetryService::WatchLoad(grpc::ServerContext* context,
                                         const moe::v1::WatchLoadRequest* request,
                                         grpc::ServerWriter<moe::v1::LoadSnapshot>* writer) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok())
    return denied;
  const absl::Duration interval =
      absl::Milliseconds(request->interval_ms() == 0
                             ? 1000
                             : std::max<int64_t>(request->interval_ms(), watch_.min_interval_ms));
  if (watchers_.fetch_add(1) >= watch_.max_streams) {
    watchers_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the server allows ", watch_.max_streams,
                                     " WatchLoad streams at once (--max-watch-streams)"));
  }
  struct Leave {
    std::atomic<int>* n;
    ~Leave() { n->fetch_sub(1); }
  } leave{&watchers_};
  for (;;) {
    if (!writer->Write(Visible(*context, LoadSnapshotToProto(aggregator_->Snapshot())))) {
      return grpc::Status::OK;  // the client left
    }
    // Sleep in short slices so a leaving client or a server shutdown ends the stream promptly.
    const absl::Time next = absl::Now() + interval;
    while (absl::Now() < next) {
      if (context->IsCancelled()) return grpc::Status::CANCELLED;
      if (stopping_ != nullptr && stopping_->load()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
      }
      absl::SleepFor(std::min(absl::Milliseconds(20), next - absl::Now()));
    }
  }
}

grpc::Status TelemetryService::ResetLoad(grpc::ServerContext* context,
                                         const moe::v1::ResetLoadRequest*,
                                         moe::v1::ResetLoadResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kAdmin); !denied.ok())
    return denied;
  response->set_epoch(aggregator_->Reset());
  return grpc::Status::OK;
}

namespace {

grpc::StatusCode ToGrpcCode(absl::StatusCode code) { return static_cast<grpc::StatusCode>(code); }

}  // namespace

grpc::Status TelemetryService::Rebalance(grpc::ServerContext* context,
                                         const moe::v1::RebalanceRequest* request,
                                         moe::v1::RebalanceResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kAdmin); !denied.ok())
    return denied;
  if (rebalancer_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "this server cannot change its expert placement");
  }
  RebalanceOutcome outcome;
  if (request->dry_run()) {
    absl::StatusOr<RebalancePlan> plan = rebalancer_->Plan(request->force());
    if (!plan.ok())
      return grpc::Status(ToGrpcCode(plan.status().code()), std::string(plan.status().message()));
    outcome.plan = *std::move(plan);
  } else {
    // The client's deadline, or a generous default: loading 8x7B experts from disk takes a while.
    const absl::Time deadline = context->deadline() == std::chrono::system_clock::time_point::max()
                                    ? absl::Now() + absl::Minutes(10)
                                    : absl::FromChrono(context->deadline());
    absl::StatusOr<RebalanceOutcome> done = rebalancer_->Request(request->force(), deadline);
    if (!done.ok())
      return grpc::Status(ToGrpcCode(done.status().code()), std::string(done.status().message()));
    outcome = *std::move(done);
  }
  const RebalancePlan& plan = outcome.plan;
  response->set_applied(outcome.applied);
  response->set_skipped(plan.skipped);
  response->set_placement_epoch(rebalancer_->placements().epoch());
  response->set_balancedness_before(plan.balancedness_before);
  response->set_predicted_balancedness(plan.predicted_balancedness);
  response->set_moved_slots(plan.moved_slots);
  response->set_moved_experts(plan.moved_experts);
  response->set_replicas(plan.replicas);
  if (plan.placement != nullptr) {
    for (int l = 0; l < plan.placement->n_layers(); ++l) {
      SlotsToProto(plan.placement->slots(l), response->add_plan());
    }
    response->set_plan_json(plan.placement->ToJson());
  }
  if (outcome.applied) RearrangementToProto(outcome.record, response->mutable_rearrangement());
  return grpc::Status::OK;
}

grpc::Status WorkerTelemetryService::StreamReports(
    grpc::ServerContext* context, grpc::ServerReader<moe::v1::WorkerReport>* reader,
    moe::v1::WorkerReportAck*) {
  const auto presented = context->client_metadata().find(kWorkerTokenHeader);
  if (presented == context->client_metadata().end() ||
      !ConstantTimeEquals(token_,
                          absl::string_view(presented->second.data(), presented->second.size()))) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "worker reports need the cluster's token");
  }
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
    open_.insert(context);
  }
  grpc::Status status = grpc::Status::OK;
  moe::v1::WorkerReport report;
  int rank = 0;
  const uint64_t stream = next_stream_.fetch_add(1) + 1;
  while (reader->Read(&report)) {
    if (rank == 0) rank = report.rank();
    absl::Status taken =
        report.rank() == rank
            ? aggregator_->OnWorkerReport(WorkerReportFromProto(report), stream)
            : absl::InvalidArgumentError("a report stream speaks for one rank only");
    if (!taken.ok()) {
      status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(taken.message()));
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  open_.erase(context);
  // Not at shutdown (we ended it): the worker's side went away, so its heartbeat is lost now.
  if (rank != 0 && !cancelled_) aggregator_->OnWorkerStreamEnded(rank);
  return status;
}

void WorkerTelemetryService::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ServerContext* context : open_) context->TryCancel();
}

}  // namespace moe
