#include "coordinator/server/inference_service.h"

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "core/model/utf8.h"

namespace moe {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

moe::v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kEos: return moe::v1::FINISH_REASON_EOS;
    case FinishReason::kLength: return moe::v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return moe::v1::FINISH_REASON_STOP;
    case FinishReason::kNone: break;
  }
  return moe::v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<Request> InferenceService::Translate(const moe::v1::GenerateRequest& req) const {
  Request r;
  if (req.has_token_ids()) {
    r.prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  } else if (req.prompt_case() == moe::v1::GenerateRequest::kText) {
    if (static_cast<int64_t>(req.text().size()) > max_prompt_bytes_) {
      return absl::InvalidArgumentError(absl::StrCat("text of ", req.text().size(),
                                                     " bytes exceeds the server's limit of ",
                                                     max_prompt_bytes_, " (--max-prompt-bytes)"));
    }
    if (!IsValidUtf8(req.text())) return absl::InvalidArgumentError("text is not valid UTF-8");
    if (!req.text().empty()) {
      for (int id : tokenizer_->Encode(req.text(), /*add_bos=*/true)) r.prompt.push_back(id);
    }
  }
  const moe::v1::SamplingParams& s = req.sampling();
  // uint32 on the wire: anything past int's range is past every limit too. Without `sampling`
  // at all the request gets the defaults the proto documents: greedy, kDefaultMaxTokens.
  r.max_tokens = req.has_sampling() ? static_cast<int>(std::min<uint32_t>(s.max_tokens(), INT_MAX))
                                    : kDefaultMaxTokens;
  r.sampling.temperature = s.temperature();
  r.sampling.top_k = s.top_k();
  r.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  r.sampling.seed = s.seed();
  r.sampling.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  r.sampling.frequency_penalty = s.frequency_penalty();
  r.sampling.presence_penalty = s.presence_penalty();
  r.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  r.min_tokens = static_cast<int>(std::min<uint32_t>(s.min_tokens(), INT_MAX));
  r.ignore_eos = s.ignore_eos();
  for (const std::string& stop : s.stop()) {
    if (!IsValidUtf8(stop)) return absl::InvalidArgumentError("sampling.stop holds invalid UTF-8");
    r.stop.push_back(stop);
  }
  r.label = req.label();  // Request::Validate (in Submit) checks it
  return r;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const moe::v1::GenerateRequest* request,
                                        grpc::ServerWriter<moe::v1::GenerateResponse>* writer) {
  StreamEvent last;
  const grpc::Status status = Stream(context, request, writer, &last);
  if (metrics_ != nullptr) {
    if (status.ok()) {
      metrics_->RecordFinished(FinishReasonName(last.finish), last.prompt_tokens,
                               last.generated_tokens, last.time_to_first_token_ms / 1e3,
                               last.total_ms / 1e3, last.queue_ms / 1e3);
    } else {
      metrics_->RecordFailed(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())));
    }
  }
  return status;
}

grpc::Status InferenceService::Stream(grpc::ServerContext* context,
                                      const moe::v1::GenerateRequest* request,
                                      grpc::ServerWriter<moe::v1::GenerateResponse>* writer,
                                      StreamEvent* last) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok()) return denied;
  absl::StatusOr<Request> r = Translate(*request);
  if (!r.ok()) return ToGrpc(r.status());
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle = scheduler_->Submit(*std::move(r));
  if (!handle.ok()) return ToGrpc(handle.status());
  // A stream ends early because the client cancelled, left, or its deadline passed: gRPC reports
  // all three as a cancelled context or a failed write, so the deadline is looked at here (with a
  // little slack: gRPC's timer may fire a moment before this clock reaches it).
  auto ended_early = [&](const char* why) {
    (*handle)->Cancel();
    const auto deadline = context->deadline();
    const bool expired = deadline != std::chrono::system_clock::time_point::max() &&
                         deadline <= std::chrono::system_clock::now() + std::chrono::milliseconds(20);
    return expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded")
                   : grpc::Status(grpc::StatusCode::CANCELLED, why);
  };
  absl::Time previous_token = absl::InfinitePast();
  for (;;) {
    if (context->IsCancelled()) return ended_early("cancelled by the client");
    // Wait wakes the moment the engine pushes an event (the step that made the token has ended);
    // the timeout only bounds how late a client's cancellation is noticed while nothing arrives.
    for (StreamEvent& e : (*handle)->Wait(absl::Milliseconds(20))) {
      if (!e.error.ok()) return ToGrpc(e.error);
      if (metrics_ != nullptr && previous_token != absl::InfinitePast()) {
        metrics_->RecordInterToken(absl::ToDoubleSeconds(e.sampled_at - previous_token));
      }
      previous_token = e.sampled_at;
      moe::v1::GenerateResponse out;
      out.set_request_id((*handle)->id());
      out.mutable_token_ids()->Add(e.token_ids.begin(), e.token_ids.end());
      out.set_text(std::move(e.text));
      if (e.finish != FinishReason::kNone) {
        out.set_finish_reason(ToProto(e.finish));
        moe::v1::Usage* u = out.mutable_usage();
        u->set_prompt_tokens(static_cast<uint32_t>(e.prompt_tokens));
        u->set_generated_tokens(static_cast<uint32_t>(e.generated_tokens));
        u->set_time_to_first_token_ms(e.time_to_first_token_ms);
        u->set_total_ms(e.total_ms);
      }
      if (!writer->Write(out)) return ended_early("the client went away");
      if (e.finish != FinishReason::kNone) {
        *last = std::move(e);
        return grpc::Status::OK;
      }
    }
  }
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* context, const moe::v1::TokenizeRequest* request,
                                        moe::v1::TokenizeResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok()) return denied;
  if (static_cast<int64_t>(request->text().size()) > max_prompt_bytes_) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("text of ", request->text().size(), " bytes exceeds the server's limit of ",
                                     max_prompt_bytes_, " (--max-prompt-bytes)"));
  }
  if (!IsValidUtf8(request->text())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text is not valid UTF-8");
  }
  for (int id : tokenizer_->Encode(request->text(), request->add_bos())) response->add_ids(id);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Detokenize(grpc::ServerContext* context, const moe::v1::DetokenizeRequest* request,
                                          moe::v1::DetokenizeResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok()) return denied;
  std::vector<int> ids;
  for (int id : request->ids()) {
    if (id < 0 || id >= tokenizer_->vocab_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("token id ", id, " is outside the tokenizer's vocabulary [0, ",
                                       tokenizer_->vocab_size(), ")"));
    }
    ids.push_back(id);
  }
  response->set_text(tokenizer_->Decode(ids));
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext* context, const moe::v1::GetModelInfoRequest*,
                                            moe::v1::ModelInfo* info) {
  if (grpc::Status denied = authorizer_.Check(*context, CallRole::kUser); !denied.ok()) return denied;
  const MixtralConfig& c = *config_;
  info->set_hidden_size(c.hidden_size);
  info->set_intermediate_size(c.intermediate_size);
  info->set_num_hidden_layers(c.num_hidden_layers);
  info->set_num_attention_heads(c.num_attention_heads);
  info->set_num_key_value_heads(c.num_key_value_heads);
  info->set_head_dim(c.head_dim);
  info->set_num_local_experts(c.num_local_experts);
  info->set_num_experts_per_tok(c.num_experts_per_tok);
  info->set_vocab_size(c.vocab_size);
  info->set_max_position_embeddings(c.max_position_embeddings);
  info->set_sliding_window(c.sliding_window);
  info->set_rope_theta(c.rope_theta);
  const auto [placement, epoch] = placement_ ? placement_() : std::make_pair(nullptr, 0u);
  if (placement != nullptr) {
    info->set_workers(placement->n_workers());
    info->set_placement_epoch(epoch);
    for (int l = 0; l < placement->n_layers(); ++l) {
      moe::v1::ExpertPlacementLayer* layer = info->add_placement();
      const std::vector<int>& first = placement->table()[l];
      layer->mutable_worker_rank()->Add(first.begin(), first.end());
      for (int e = 0; e < placement->n_experts(); ++e) {
        moe::v1::ExpertReplicas* replicas = layer->add_replicas();
        for (int slot : placement->replicas(l, e)) replicas->add_worker_rank(placement->slots(l)[slot].rank);
      }
    }
  }
  info->set_quantize(quantize_);
  for (const RankWeights& r : ranks_) {
    moe::v1::RankWeights* out = info->add_ranks();
    out->set_rank(r.rank);
    out->set_role(r.rank == 0 ? "coordinator" : "worker");
    out->set_held_as(r.held_as);
    out->set_held_bytes(r.held_bytes);
    out->set_mapped_bytes(r.mapped_bytes);
    out->set_resident_bytes(r.resident_bytes);
  }
  const SchedulerStats s = scheduler_->stats();
  info->set_running_sequences(s.running);
  info->set_waiting_requests(s.waiting);
  info->set_kv_cache_bytes_used(s.kv_bytes_used);
  info->set_kv_cache_bytes_budget(s.kv_bytes_budget);
  info->set_requests_served(s.served);
  return grpc::Status::OK;
}

}  // namespace moe
