// TelemetryReporter: a worker's background thread that streams its LoadRecorder's counters to the
// coordinator's WorkerTelemetry service every interval (each report doubles as a heartbeat). The
// worker's only protobuf: the recorder's WorkerReport struct becomes a moe.v1.WorkerReport here.
// It never touches MPI or the serving loop: a slow or absent coordinator costs a reconnect, not
// a step.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/mpi/cluster_setup.h"
#include "grpcpp/grpcpp.h"
#include "moe/v1/telemetry.grpc.pb.h"
#include "worker/load_recorder.h"

namespace moe {

// Every field of the report, one for one (the coordinator reads it back with
// WorkerReportFromProto in coordinator/server/telemetry_proto.h).
moe::v1::WorkerReport WorkerReportToProto(const WorkerReport& report);

class TelemetryReporter {
 public:
  // recorder: not owned, must outlive the reporter. endpoint: where, how often, the cluster's
  // token and the coordinator's certificate to pin (TLS when set). Starts the thread.
  TelemetryReporter(LoadRecorder* recorder, const TelemetryEndpoint& endpoint);
  // Stops streaming (cancels the stream in flight) and joins the thread.
  ~TelemetryReporter();

 private:
  void Run();
  // One stream: reports until a Write fails or the reporter stops; false once stopping.
  bool StreamOnce(moe::v1::WorkerTelemetry::Stub* stub);

  LoadRecorder* recorder_;
  const std::string address_;
  const std::string token_;
  const std::string server_certificate_;
  const absl::Duration interval_;
  int failed_streams_ = 0;  // in a row; the first long run of them is logged once
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;  // the live stream, to cancel
  std::thread thread_;
};

}  // namespace moe
