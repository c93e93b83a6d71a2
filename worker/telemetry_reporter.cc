#include "worker/telemetry_reporter.h"

#include <cstdio>

#include "worker/pinned_credentials.h"

namespace moe {

moe::v1::WorkerReport WorkerReportToProto(const WorkerReport& in) {
  moe::v1::WorkerReport out;
  out.set_rank(in.rank);
  out.set_epoch(in.epoch);
  out.set_sequence(in.sequence);
  out.set_host(in.host);
  out.set_exchanges(in.exchanges);
  out.set_last_step_id(in.last_step_id);
  out.set_compute_seconds(in.compute_seconds);
  out.set_exchange_wait_seconds(in.exchange_wait_seconds);
  out.set_idle_seconds(in.idle_seconds);
  out.set_bytes_in(in.bytes_in);
  out.set_bytes_out(in.bytes_out);
  out.set_placement_epoch(in.placement_epoch);
  for (const ExpertLoad& e : in.experts) {
    moe::v1::ExpertLoad* load = out.add_experts();
    load->set_layer(e.layer);
    load->set_expert(e.expert);
    load->set_tokens(e.tokens);
    load->set_busy_seconds(e.busy_seconds);
  }
  return out;
}

TelemetryReporter::TelemetryReporter(LoadRecorder* recorder, const TelemetryEndpoint& endpoint)
    : recorder_(recorder),
      address_(endpoint.address),
      token_(endpoint.token),
      server_certificate_(endpoint.server_certificate),
      interval_(absl::Milliseconds(endpoint.interval_ms)) {
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
  auto channel = grpc::CreateCustomChannel(address_, WorkerChannelCredentials(server_certificate_), args);
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
  context.AddMetadata(kWorkerTokenHeader, token_);
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    context_ = &context;
  }
  moe::v1::WorkerReportAck ack;
  std::unique_ptr<grpc::ClientWriter<moe::v1::WorkerReport>> writer = stub->StreamReports(&context, &ack);
  int written = 0;
  while (writer->Write(WorkerReportToProto(recorder_->NextReport()))) {
    ++written;
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) break;
  }
  // The coordinator shuts its server down before it shuts the workers down, so by the time we
  // stop nobody listens: cancel instead of waiting for an answer.
  context.TryCancel();
  const grpc::Status status = writer->Finish();
  failed_streams_ = written > 0 ? 0 : failed_streams_ + 1;
  if (failed_streams_ == 10) {  // about 10 intervals without a single report: say so, once
    std::fprintf(stderr, "moe-worker: cannot report load to the coordinator at %s (%s); retrying quietly\n",
                 address_.c_str(), status.error_message().c_str());
  }
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
  return !stopping_;
}

}  // namespace moe
