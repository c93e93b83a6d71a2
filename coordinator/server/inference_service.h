// InferenceService: the gRPC face of the scheduler. Translates requests into plain Requests (the
// scheduler validates them) and streams the scheduler's events back; the engine never sees
// protobuf types.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/inference/scheduler.h"
#include "coordinator/server/server_security.h"
#include "coordinator/telemetry/request_metrics.h"
#include "core/model/config.h"
#include "core/model/tokenizer.h"
#include "core/placement/expert_placement.h"
#include "moe/v1/inference.grpc.pb.h"

namespace moe {

// How one rank holds its weights (its start-up report), for GetModelInfo.
struct RankWeights {
  int rank = 0;                // 0: the coordinator
  std::string held_as;         // e.g. "experts INT4"
  int64_t held_bytes = 0;      // weight bytes as held
  int64_t mapped_bytes = 0;    // checkpoint bytes mapped
  int64_t resident_bytes = 0;  // resident memory after loading
};

class InferenceService final : public moe::v1::Inference::Service {
 public:
  // A GenerateRequest without `sampling` generates this many tokens, greedily (inference.proto).
  static constexpr int kDefaultMaxTokens = 16;

  // The placement in force and its epoch, read at each GetModelInfo (it changes with live
  // re-placement); any thread. Returns null for a single process.
  using PlacementSource = std::function<std::pair<std::shared_ptr<const ExpertPlacement>, uint32_t>()>;

  // Nothing is owned; metrics may be null (not counted).
  // max_prompt_bytes: Generate's text and Tokenize's, refused before tokenizing (its cost grows
  // with the text). authorizer: who may call (every call is a user's); the default lets all.
  InferenceService(Scheduler* scheduler, const Tokenizer* tokenizer, const MixtralConfig* config,
                   PlacementSource placement, RequestMetrics* metrics = nullptr,
                   int64_t max_prompt_bytes = 1 << 20, CallAuthorizer authorizer = {})
      : scheduler_(scheduler),
        tokenizer_(tokenizer),
        config_(config),
        placement_(std::move(placement)),
        metrics_(metrics),
        max_prompt_bytes_(max_prompt_bytes),
        authorizer_(std::move(authorizer)) {}

  // How each rank holds its weights, and the --quantize spec, for GetModelInfo (set before
  // serving).
  void set_weights(std::string quantize, std::vector<RankWeights> ranks) {
    quantize_ = std::move(quantize);
    ranks_ = std::move(ranks);
  }

  grpc::Status Generate(grpc::ServerContext* context, const moe::v1::GenerateRequest* request,
                        grpc::ServerWriter<moe::v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const moe::v1::TokenizeRequest* request,
                        moe::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const moe::v1::DetokenizeRequest* request,
                          moe::v1::DetokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const moe::v1::GetModelInfoRequest* request,
                            moe::v1::ModelInfo* response) override;

 private:
  // The wire request as a Request: text tokenized (BOS first), sampling copied. INVALID_ARGUMENT
  // only for what the wire allows and a Request cannot hold (invalid UTF-8); the rest is
  // Request::Validate's, in Scheduler::Submit.
  absl::StatusOr<Request> Translate(const moe::v1::GenerateRequest& request) const;

  // Generate without the accounting; *last receives the final event of a finished stream.
  grpc::Status Stream(grpc::ServerContext* context, const moe::v1::GenerateRequest* request,
                      grpc::ServerWriter<moe::v1::GenerateResponse>* writer, StreamEvent* last);

  Scheduler* scheduler_;
  const Tokenizer* tokenizer_;
  const MixtralConfig* config_;
  std::string quantize_;
  std::vector<RankWeights> ranks_;
  PlacementSource placement_;
  RequestMetrics* metrics_;
  int64_t max_prompt_bytes_;
  const CallAuthorizer authorizer_;
};

}  // namespace moe
