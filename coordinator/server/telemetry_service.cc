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
  if (rank != 0 && !cancelled_ && liveness_ != nullptr) liveness_->OnStreamEnded(rank);
  return status;
}

void WorkerTelemetryService::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ServerContext* context : open_) context->TryCancel();
}

}  // namespace moe
