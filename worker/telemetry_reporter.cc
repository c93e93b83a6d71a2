#include "worker/telemetry_reporter.h"

#include <chrono>

namespace moe {

TelemetryReporter::TelemetryReporter(LoadRecorder* recorder, std::string address,
                                     absl::Duration interval)
    : recorder_(recorder), address_(std::move(address)), interval_(interval) {
  thread_ = std::thread([this] { Run(); });
}

TelemetryReporter::~TelemetryReporter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();  // unblocks a Write to a stalled coordinator
  }
  thread_.join();
}

void TelemetryReporter::Run() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);  // the coordinator is never behind $http_proxy
  auto channel = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  auto stub = moe::v1::WorkerTelemetry::NewStub(channel);
  while (StreamOnce(stub.get())) {
    // The coordinator is not there (yet, or any more): retry at the report interval.
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_);
    if (stopping_) return;
  }
}

bool TelemetryReporter::StreamOnce(moe::v1::WorkerTelemetry::Stub* stub) {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    context_ = &context;
  }
  moe::v1::WorkerReportAck ack;
  std::unique_ptr<grpc::ClientWriter<moe::v1::WorkerReport>> writer = stub->StreamReports(&context, &ack);
  while (writer->Write(recorder_->NextReport())) {
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) break;
  }
  // The coordinator shuts its server down before it shuts the workers down, so by the time we
  // stop nobody listens: cancel instead of waiting for an answer.
  context.TryCancel();
  writer->Finish().IgnoreError();
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
  return !stopping_;
}

}  // namespace moe
