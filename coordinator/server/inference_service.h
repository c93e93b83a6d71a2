// InferenceService: the gRPC face of the scheduler. Translates and validates requests into plain
// ServeRequests and streams the scheduler's events back; the engine never sees protobuf types.
#pragma once

#include "coordinator/scheduler.h"
#include "coordinator/telemetry/request_metrics.h"
#include "core/config.h"
#include "core/expert_placement.h"
#include "core/tokenizer.h"
#include "moe/v1/inference.grpc.pb.h"

namespace moe {

struct ServiceLimits {
  int max_tokens = 4096;  // largest sampling.max_tokens accepted
};

class InferenceService final : public moe::v1::Inference::Service {
 public:
  // Nothing is owned; placement may be null (single process), metrics too (not counted).
  InferenceService(Scheduler* scheduler, const Tokenizer* tokenizer, const MixtralConfig* config,
                   const ExpertPlacement* placement, ServiceLimits limits,
                   RequestMetrics* metrics = nullptr)
      : scheduler_(scheduler),
        tokenizer_(tokenizer),
        config_(config),
        placement_(placement),
        limits_(limits),
        metrics_(metrics) {}

  grpc::Status Generate(grpc::ServerContext* context, const moe::v1::GenerateRequest* request,
                        grpc::ServerWriter<moe::v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const moe::v1::TokenizeRequest* request,
                        moe::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const moe::v1::DetokenizeRequest* request,
                          moe::v1::DetokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const moe::v1::GetModelInfoRequest* request,
                            moe::v1::ModelInfo* response) override;

  // The validation Generate applies, exposed for tests: request -> ServeRequest or
  // INVALID_ARGUMENT naming the field.
  absl::StatusOr<ServeRequest> Translate(const moe::v1::GenerateRequest& request) const;

 private:
  // Generate without the accounting; *last receives the final event of a finished stream.
  grpc::Status Stream(grpc::ServerContext* context, const moe::v1::GenerateRequest* request,
                      grpc::ServerWriter<moe::v1::GenerateResponse>* writer, StreamEvent* last);

  Scheduler* scheduler_;
  const Tokenizer* tokenizer_;
  const MixtralConfig* config_;
  const ExpertPlacement* placement_;
  ServiceLimits limits_;
  RequestMetrics* metrics_;
};

}  // namespace moe
