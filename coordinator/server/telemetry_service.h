// TelemetryService: the gRPC face of the LoadAggregator, for users (moe.v1.Telemetry: GetLoad,
// WatchLoad, ResetLoad) and for the workers' report streams (moe.v1.WorkerTelemetry). It only
// translates: protobuf in and out here (telemetry_proto.h), plain structs in the aggregator.
#pragma once

#include <atomic>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/server/server_security.h"
#include "coordinator/telemetry/load_aggregator.h"
#include "coordinator/telemetry/worker_liveness.h"
#include "core/mpi/cluster_setup.h"
#include "moe/v1/telemetry.grpc.pb.h"

namespace moe {

// Bounds on WatchLoad: each stream takes a snapshot (under the lock the engine takes every layer)
// every interval.
struct WatchLimits {
  int max_streams = 16;       // more at once get RESOURCE_EXHAUSTED
  int min_interval_ms = 200;  // shorter intervals are raised to this
};

class TelemetryService final : public moe::v1::Telemetry::Service {
 public:
  // aggregator: not owned. stopping: when it becomes true, WatchLoad streams end (server
  // shutdown); may be null. authorizer: who may read (GetLoad, WatchLoad) and who may administer
  // (ResetLoad); the default lets all.
  TelemetryService(LoadAggregator* aggregator, const std::atomic<bool>* stopping,
                   WatchLimits watch = {}, CallAuthorizer authorizer = {})
      : aggregator_(aggregator),
        stopping_(stopping),
        watch_(watch),
        authorizer_(std::move(authorizer)) {}

  grpc::Status GetLoad(grpc::ServerContext* context, const moe::v1::GetLoadRequest* request,
                       moe::v1::LoadSnapshot* response) override;
  grpc::Status WatchLoad(grpc::ServerContext* context, const moe::v1::WatchLoadRequest* request,
                         grpc::ServerWriter<moe::v1::LoadSnapshot>* writer) override;
  grpc::Status ResetLoad(grpc::ServerContext* context, const moe::v1::ResetLoadRequest* request,
                         moe::v1::ResetLoadResponse* response) override;

 private:
  // The snapshot as this caller may see it (workers' host names for administrators only).
  moe::v1::LoadSnapshot Visible(const grpc::ServerContext& context, moe::v1::LoadSnapshot s) const;

  LoadAggregator* aggregator_;
  const std::atomic<bool>* stopping_;
  const WatchLimits watch_;
  const CallAuthorizer authorizer_;
  std::atomic<int> watchers_{0};
};

class WorkerTelemetryService final : public moe::v1::WorkerTelemetry::Service {
 public:
  // Streams must carry `token` in the kWorkerTokenHeader metadata; each stream speaks for the
  // rank of its first report only, and a report the aggregator refuses ends the stream. A stream
  // that ends tells `liveness` (not owned; may be null) its worker is lost.
  WorkerTelemetryService(LoadAggregator* aggregator, WorkerLiveness* liveness, std::string token)
      : aggregator_(aggregator), liveness_(liveness), token_(std::move(token)) {}
  grpc::Status StreamReports(grpc::ServerContext* context,
                             grpc::ServerReader<moe::v1::WorkerReport>* reader,
                             moe::v1::WorkerReportAck* response) override;
  // Ends every open report stream now (server shutdown); new ones are refused.
  void CancelAll();

 private:
  LoadAggregator* aggregator_;
  WorkerLiveness* liveness_;
  const std::string token_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> next_stream_{0};  // numbers the report streams
  absl::flat_hash_set<grpc::ServerContext*> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe
