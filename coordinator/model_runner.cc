#include "coordinator/model_runner.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "kernels/cpu/simd_kernels.h"
#include "kernels/ops.h"

namespace moe {

ModelRunner::ModelRunner(const ModelWeights* weights, ExpertExchange* exchange, OpTimes* times)
    : weights_(weights), exchange_(exchange), times_(times) {
  MOE_CHECK(weights_->embed.data != nullptr);  // loaded without the attention side
  routing_.resize(static_cast<size_t>(weights_->config.num_hidden_layers));
}

KvCache ModelRunner::NewCache() const {
  const MixtralConfig& c = weights_->config;
  return KvCache(c.num_hidden_layers, static_cast<int64_t>(c.num_key_value_heads) * c.head_dim);
}

absl::Status ModelRunner::Validate(absl::Span<const SequenceChunk> chunks) const {
  const MixtralConfig& c = weights_->config;
  for (const SequenceChunk& chunk : chunks) {
    if (chunk.tokens.empty()) return absl::InvalidArgumentError("a chunk has no tokens");
    for (int32_t id : chunk.tokens) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    const int64_t end = chunk.cache->length() + static_cast<int64_t>(chunk.tokens.size());
    if (end > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence of ", end,
                                                     " tokens exceeds max_position_embeddings (",
                                                     c.max_position_embeddings, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ModelRunner::Forward(absl::Span<const SequenceChunk> chunks,
                                  std::vector<float>* logits) {
  MOE_RETURN_IF_ERROR(Validate(chunks));
  for (RoutingObserver* observer : observers_) observer->OnStepBegin();
  struct StepEnd {  // on every path out, so observers never stay "in a step"
    const std::vector<RoutingObserver*>& observers;
    ~StepEnd() {
      for (RoutingObserver* observer : observers) observer->OnStepEnd();
    }
  } step_end{observers_};
  const MixtralConfig& c = weights_->config;
  const int64_t hidden = c.hidden_size;
  int64_t n = 0;
  for (const SequenceChunk& chunk : chunks) n += static_cast<int64_t>(chunk.tokens.size());

  h_.resize(static_cast<size_t>(n * hidden));
  positions_.resize(static_cast<size_t>(n));
  routed_.resize(static_cast<size_t>(n));
  {
    ScopedOpTimer t(times_, Op::kEmbed);
    int64_t row = 0;
    for (const SequenceChunk& chunk : chunks) {
      chunk.cache->Reserve(static_cast<int64_t>(chunk.tokens.size()));
      for (size_t i = 0; i < chunk.tokens.size(); ++i, ++row) {
        positions_[row] = static_cast<int32_t>(chunk.cache->length() + static_cast<int64_t>(i));
        routed_[row] = RoutedToken{chunk.sequence_id, positions_[row], chunk.tokens[i]};
        const char* src = static_cast<const char*>(weights_->embed.data) +
                          chunk.tokens[i] * hidden * DTypeSize(weights_->embed.dtype);
        kernels::simd::ConvertToF32(weights_->embed.dtype, src, hidden, h_.data() + row * hidden);
      }
    }
  }

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    Attention(l, chunks);
    MOE_RETURN_IF_ERROR(MoeBlock(l, n));
  }
  for (const SequenceChunk& chunk : chunks) chunk.cache->Advance(static_cast<int64_t>(chunk.tokens.size()));
  for (RoutingObserver* observer : observers_) observer->OnForward(routed_, routing_);

  // Final norm and lm_head only on the rows that need logits.
  int64_t n_out = 0;
  {
    int64_t row = 0;
    for (const SequenceChunk& chunk : chunks) {
      const int64_t len = static_cast<int64_t>(chunk.tokens.size());
      const int64_t first = chunk.all_logits ? row : row + len - 1;
      for (int64_t r = first; r < row + len; ++r, ++n_out) {
        std::memmove(x_.data() + n_out * hidden, h_.data() + r * hidden, hidden * sizeof(float));
      }
      row += len;
    }
  }
  {
    ScopedOpTimer t(times_, Op::kNorm);
    kernels::RmsNorm(x_.data(), weights_->final_norm.data(), n_out, hidden,
                     static_cast<float>(c.rms_norm_eps), x_.data());
  }
  ScopedOpTimer t(times_, Op::kLmHead);
  logits->resize(static_cast<size_t>(n_out * c.vocab_size));
  kernels::MatMul(x_.data(), n_out, weights_->lm_head, logits->data());
  return absl::OkStatus();
}

void ModelRunner::EndSequence(uint64_t sequence_id) {
  for (RoutingObserver* observer : observers_) observer->OnSequenceEnd(sequence_id);
}

void ModelRunner::Attention(int layer, absl::Span<const SequenceChunk> chunks) {
  const MixtralConfig& c = weights_->config;
  const AttentionLayerWeights& w = weights_->layers[layer].attention;
  const int64_t n = static_cast<int64_t>(positions_.size()), hidden = c.hidden_size;
  const int64_t q_width = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
  const int64_t kv_width = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;
  x_.resize(static_cast<size_t>(n * hidden));
  q_.resize(static_cast<size_t>(n * q_width));
  k_.resize(static_cast<size_t>(n * kv_width));
  v_.resize(static_cast<size_t>(n * kv_width));
  attn_.resize(static_cast<size_t>(n * q_width));
  proj_.resize(static_cast<size_t>(n * hidden));
  {
    ScopedOpTimer t(times_, Op::kNorm);
    kernels::RmsNorm(h_.data(), w.input_norm.data(), n, hidden, static_cast<float>(c.rms_norm_eps),
                     x_.data());
  }
  {
    ScopedOpTimer t(times_, Op::kQkv);
    kernels::MatMul(x_.data(), n, w.q_proj, q_.data());
    kernels::MatMul(x_.data(), n, w.k_proj, k_.data());
    kernels::MatMul(x_.data(), n, w.v_proj, v_.data());
  }
  {
    ScopedOpTimer t(times_, Op::kRope);
    const float theta = static_cast<float>(c.rope_theta);
    kernels::ApplyRope(q_.data(), positions_.data(), n, c.num_attention_heads, c.head_dim, theta);
    kernels::ApplyRope(k_.data(), positions_.data(), n, c.num_key_value_heads, c.head_dim, theta);
  }
  {
    ScopedOpTimer t(times_, Op::kAttention);
    int64_t row = 0;
    for (const SequenceChunk& chunk : chunks) {
      const int64_t len = static_cast<int64_t>(chunk.tokens.size());
      const int64_t first_pos = chunk.cache->length();
      std::memcpy(chunk.cache->keys(layer) + first_pos * kv_width, k_.data() + row * kv_width,
                  len * kv_width * sizeof(float));
      std::memcpy(chunk.cache->values(layer) + first_pos * kv_width, v_.data() + row * kv_width,
                  len * kv_width * sizeof(float));
      kernels::AttentionShape shape;
      shape.n_new = len;
      shape.first_pos = first_pos;
      shape.n_heads = c.num_attention_heads;
      shape.n_kv_heads = c.num_key_value_heads;
      shape.head_dim = c.head_dim;
      shape.window = c.sliding_window;
      kernels::Attention(q_.data() + row * q_width, chunk.cache->keys(layer),
                         chunk.cache->values(layer), shape, attn_.data() + row * q_width);
      row += len;
    }
  }
  ScopedOpTimer t(times_, Op::kOutProj);
  kernels::MatMul(attn_.data(), n, w.o_proj, proj_.data());
  for (int64_t i = 0; i < n * hidden; ++i) h_[i] += proj_[i];
}

absl::Status ModelRunner::MoeBlock(int layer, int64_t n) {
  const MixtralConfig& c = weights_->config;
  const AttentionLayerWeights& w = weights_->layers[layer].attention;
  const int64_t hidden = c.hidden_size;
  {
    ScopedOpTimer t(times_, Op::kNorm);
    kernels::RmsNorm(h_.data(), w.post_norm.data(), n, hidden, static_cast<float>(c.rms_norm_eps),
                     x_.data());
  }
  {
    ScopedOpTimer t(times_, Op::kRouter);
    router_logits_.resize(static_cast<size_t>(n * c.num_local_experts));
    kernels::MatMul(x_.data(), n, w.router, router_logits_.data());  // [n, experts]
    routing_[layer] =
        RouteTopK(router_logits_.data(), n, c.num_local_experts, c.num_experts_per_tok);
    BuildExpertBatch(routing_[layer], x_.data(), n, hidden, c.num_local_experts, layer, &batch_,
                     &slot_);
  }
  {
    ScopedOpTimer t(times_, Op::kExchange);
    MOE_RETURN_IF_ERROR(exchange_->Exchange(batch_, &expert_out_));
  }
  ScopedOpTimer t(times_, Op::kCombine);
  CombineExpertOutputs(routing_[layer], slot_, expert_out_.data(), n, hidden, h_.data());
  return absl::OkStatus();
}

}  // namespace moe
