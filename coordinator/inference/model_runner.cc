#include "coordinator/inference/model_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace moe {
namespace {

// Times one stage. Backend work is asynchronous, so on a device the stage ends when the device
// has finished it: the wait is paid only when someone asked for times (the benchmark).
class StageTimer {
 public:
  StageTimer(OpTimes* times, Op op, kernels::Backend* backend)
      : backend_(times != nullptr && !backend->host_memory() ? backend : nullptr),
        timer_(times, op) {}
  ~StageTimer() {
    if (backend_ != nullptr) backend_->Sync().IgnoreError();  // the step's own Sync reports it
  }

 private:
  kernels::Backend* backend_;
  ScopedOpTimer timer_;
};

}  // namespace

ModelRunner::ModelRunner(const ModelWeights* weights, ExpertExchange* exchange, OpTimes* times,
                         kernels::Backend* backend)
    : weights_(weights), exchange_(exchange), times_(times), backend_(backend) {
  MOE_CHECK(weights_->embed.data != nullptr);  // loaded without the attention side
  routing_.resize(static_cast<size_t>(weights_->config.num_hidden_layers));
  for (auto* a :
       {&tokens_dev_, &positions_dev_, &experts_dev_, &candidate_ids_dev_, &all_finite_dev_}) {
    *a = kernels::BackendArray<int32_t>(backend);
  }
  for (auto* a : {&row_of_choice_dev_[0], &row_of_choice_dev_[1], &source_token_dev_[0],
                  &source_token_dev_[1], &logit_rows_dev_}) {
    *a = kernels::BackendArray<int64_t>(backend);
  }
  for (auto* a : {&h_, &x_, &q_, &k_, &v_, &attn_, &proj_, &router_logits_, &weights_dev_,
                  &rows_dev_, &expert_out_dev_, &logits_dev_, &candidate_values_dev_}) {
    *a = kernels::BackendArray<float>(backend);
  }
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(const ModelWeights* weights,
                                                                 ExpertExchange* exchange,
                                                                 kernels::Backend* backend,
                                                                 OpTimes* times) {
  if (weights->embed.data == nullptr) {
    return absl::FailedPreconditionError("the weights were loaded without the attention side");
  }
  std::unique_ptr<ModelRunner> runner(new ModelRunner(weights, exchange, times, backend));
  MOE_RETURN_IF_ERROR(runner->Upload());
  return runner;
}

absl::Status ModelRunner::Upload() {
  kernels::Backend* b = backend_;
  const ModelWeights& all = *weights_;
  // The lm_head before the embedding: tied, they are one tensor, read in place by lookups and
  // (on a CPU that packs) copied for the product, so its pages must end up resident.
  const WeightFormats& f = all.formats;
  MOE_ASSIGN_OR_RETURN(
      lm_head_, UploadWeight(all, weights_->lm_head, b, kernels::WeightUse::kMatMul, f.lm_head));
  MOE_ASSIGN_OR_RETURN(embed_, UploadWeight(all, weights_->embed, b, kernels::WeightUse::kLookup));
  MOE_ASSIGN_OR_RETURN(final_norm_, b->Upload(weights_->final_norm));
  layers_.clear();
  for (const LayerWeights& layer : weights_->layers) {
    const AttentionLayerWeights& w = layer.attention;
    LayerTensors t;
    MOE_ASSIGN_OR_RETURN(t.input_norm, b->Upload(w.input_norm));
    MOE_ASSIGN_OR_RETURN(t.q_proj,
                         UploadWeight(all, w.q_proj, b, kernels::WeightUse::kMatMul, f.attention));
    MOE_ASSIGN_OR_RETURN(t.k_proj,
                         UploadWeight(all, w.k_proj, b, kernels::WeightUse::kMatMul, f.attention));
    MOE_ASSIGN_OR_RETURN(t.v_proj,
                         UploadWeight(all, w.v_proj, b, kernels::WeightUse::kMatMul, f.attention));
    MOE_ASSIGN_OR_RETURN(t.o_proj,
                         UploadWeight(all, w.o_proj, b, kernels::WeightUse::kMatMul, f.attention));
    MOE_ASSIGN_OR_RETURN(t.post_norm, b->Upload(w.post_norm));
    MOE_ASSIGN_OR_RETURN(t.router, UploadWeight(all, w.router, b, kernels::WeightUse::kMatMulF32));
    layers_.push_back(t);
  }
  return b->Sync();
}

KvCache ModelRunner::NewCache() const {
  const MixtralConfig& c = weights_->config;
  return KvCache(backend_, c.num_hidden_layers,
                 static_cast<int64_t>(c.num_key_value_heads) * c.head_dim);
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

absl::Status ModelRunner::Reserve(int64_t n, int64_t n_out) {
  const MixtralConfig& c = weights_->config;
  const int64_t hidden = c.hidden_size, k = c.num_experts_per_tok;
  const int64_t q_width = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
  const int64_t kv_width = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;
  const bool ok = tokens_dev_.Reserve(n) && positions_dev_.Reserve(n) &&
                  experts_dev_.Reserve(n * k) && row_of_choice_dev_[0].Reserve(n * k) &&
                  source_token_dev_[0].Reserve(n * k) && row_of_choice_dev_[1].Reserve(n * k) &&
                  source_token_dev_[1].Reserve(n * k) && logit_rows_dev_.Reserve(n_out) &&
                  h_.Reserve(n * hidden) && x_.Reserve(n * hidden) && q_.Reserve(n * q_width) &&
                  k_.Reserve(n * kv_width) && v_.Reserve(n * kv_width) &&
                  attn_.Reserve(n * q_width) && proj_.Reserve(n * hidden) &&
                  router_logits_.Reserve(n * c.num_local_experts) && weights_dev_.Reserve(n * k) &&
                  rows_dev_.Reserve(n * k * hidden) && expert_out_dev_.Reserve(n * k * hidden) &&
                  logits_dev_.Reserve(n_out * c.vocab_size);
  if (!ok) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of ", backend_->Describe(), " memory for a step of ", n, " tokens"));
  }
  return absl::OkStatus();
}

template <typename T>
const T* ModelRunner::Stage(const std::vector<T>& host, kernels::BackendArray<T>* device) {
  if (backend_->host_memory()) return host.data();
  backend_->ToDevice(device->data(), host.data(), host.size() * sizeof(T));
  return device->data();
}

absl::Status ModelRunner::Forward(absl::Span<const SequenceChunk> chunks,
                                  std::vector<float>* logits) {
  logit_rows_ready_ = 0;  // until this step succeeds
  MOE_RETURN_IF_ERROR(Validate(chunks));
  const auto start = std::chrono::steady_clock::now();  // the overlap chooser's measure
  for (RoutingObserver* observer : observers_) observer->OnStepBegin();
  struct StepEnd {  // on every path out, so observers never stay "in a step"
    const std::vector<RoutingObserver*>& observers;
    ~StepEnd() {
      for (RoutingObserver* observer : observers) observer->OnStepEnd();
    }
  } step_end{observers_};
  const MixtralConfig& c = weights_->config;
  const int64_t hidden = c.hidden_size;

  tokens_.clear();
  positions_.clear();
  routed_.clear();
  logit_rows_.clear();
  for (const SequenceChunk& chunk : chunks) {
    MOE_RETURN_IF_ERROR(chunk.cache->Reserve(static_cast<int64_t>(chunk.tokens.size())));
    const int64_t len = static_cast<int64_t>(chunk.tokens.size());
    const int64_t first_row = static_cast<int64_t>(tokens_.size());
    for (int64_t i = 0; i < len; ++i) {
      const int32_t pos = static_cast<int32_t>(chunk.cache->length() + i);
      tokens_.push_back(chunk.tokens[i]);
      positions_.push_back(pos);
      routed_.push_back(RoutedToken{chunk.sequence_id, pos, chunk.tokens[i], chunk.prefill});
      if (chunk.all_logits || i == len - 1) logit_rows_.push_back(first_row + i);
    }
  }
  const int64_t n = static_cast<int64_t>(tokens_.size());
  const int64_t n_out = static_cast<int64_t>(logit_rows_.size());
  MOE_RETURN_IF_ERROR(Reserve(n, n_out));
  {
    StageTimer t(times_, Op::kEmbed, backend_);
    backend_->Embed(embed_, Stage(tokens_, &tokens_dev_), n, h_.data());
    Stage(positions_, &positions_dev_);
  }

  MicroBatch mb[2];
  const bool decode = std::all_of(chunks.begin(), chunks.end(), [](const SequenceChunk& chunk) {
    return chunk.tokens.size() == 1;
  });
  bool asked = false;
  const int n_micro = SplitMicroBatches(chunks, n, decode, mb, &asked);
  last_micro_batches_ = n_micro;
  if (n_micro == 2) {
    for (int64_t i = mb[1].first_row; i < n; ++i)
      routed_[static_cast<size_t>(i)].second_micro_batch = true;
  }
  MOE_RETURN_IF_ERROR(RunLayers(mb, n_micro));

  // Final norm and lm_head only on the rows that need logits.
  {
    StageTimer t(times_, Op::kNorm, backend_);
    backend_->GatherRows(h_.data(), Stage(logit_rows_, &logit_rows_dev_), n_out, hidden, x_.data());
    backend_->RmsNorm(x_.data(), final_norm_, n_out, hidden, static_cast<float>(c.rms_norm_eps),
                      x_.data());
  }
  {
    StageTimer t(times_, Op::kLmHead, backend_);
    backend_->MatMul(x_.data(), n_out, lm_head_, logits_dev_.data());
    if (logits != nullptr) {
      logits->resize(static_cast<size_t>(n_out * c.vocab_size));
      backend_->ToHost(logits->data(), logits_dev_.data(), logits->size() * sizeof(float));
    }
  }
  MOE_RETURN_IF_ERROR(backend_->Sync());
  logit_rows_ready_ = n_out;
  if (asked) {
    overlap_.Record(
        n, decode, n_micro == 2,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  // Only a step that succeeded commits its positions and reaches the observers.
  for (const SequenceChunk& chunk : chunks)
    chunk.cache->Advance(static_cast<int64_t>(chunk.tokens.size()));
  for (RoutingObserver* observer : observers_) observer->OnForward(routed_, routing_);
  return absl::OkStatus();
}

absl::Status ModelRunner::SampleNext(absl::Span<Sampler* const> samplers,
                                     std::vector<int32_t>* tokens) {
  const int64_t vocab = weights_->config.vocab_size;
  const int64_t rows = static_cast<int64_t>(samplers.size());
  if (rows != logit_rows_ready_) {
    return absl::FailedPreconditionError(absl::StrCat("SampleNext got ", rows, " samplers for the ",
                                                      logit_rows_ready_, " logits rows left"));
  }
  tokens->assign(static_cast<size_t>(rows), -1);
  kernels::Backend* b = backend_;
  // The CPU takes the same path as a GPU (its copies are memcpy), so every test exercises it.
  // One TopK for every row, wide enough for the widest need the device can serve.
  int64_t k = 0;
  for (Sampler* s : samplers) {
    const int64_t need = s != nullptr ? s->CandidatesNeeded(vocab) : 0;
    if (need <= b->max_sample_candidates()) k = std::max(k, need);
  }
  if (k > 0) {
    if (!candidate_values_dev_.Reserve(rows * k) || !candidate_ids_dev_.Reserve(rows * k) ||
        !all_finite_dev_.Reserve(rows)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("out of ", b->Describe(), " memory for sampling"));
    }
    candidate_values_.resize(static_cast<size_t>(rows * k));
    candidate_ids_.resize(static_cast<size_t>(rows * k));
    all_finite_.resize(static_cast<size_t>(rows));
    b->TopK(logits_dev_.data(), rows, vocab, static_cast<int>(k), candidate_values_dev_.data(),
            candidate_ids_dev_.data(), all_finite_dev_.data());
    b->ToHost(candidate_values_.data(), candidate_values_dev_.data(),
              candidate_values_.size() * sizeof(float));
    b->ToHost(candidate_ids_.data(), candidate_ids_dev_.data(),
              candidate_ids_.size() * sizeof(int32_t));
    b->ToHost(all_finite_.data(), all_finite_dev_.data(), all_finite_.size() * sizeof(int32_t));
    MOE_RETURN_IF_ERROR(b->Sync());
  }
  for (int64_t r = 0; r < rows; ++r) {
    Sampler* s = samplers[r];
    if (s == nullptr) continue;
    const int64_t need = s->CandidatesNeeded(vocab);
    if (need > 0 && need <= k && all_finite_[r]) {
      (*tokens)[r] = s->SampleFromCandidates(candidate_values_.data() + r * k,
                                             candidate_ids_.data() + r * k, k);
      continue;
    }
    // The whole row: sampling without top_k, a need beyond the device's, or non-finite logits.
    row_.resize(static_cast<size_t>(vocab));
    b->ToHost(row_.data(), logits_dev_.data() + r * vocab, row_.size() * sizeof(float));
    MOE_RETURN_IF_ERROR(b->Sync());
    const bool finite =
        k > 0 ? all_finite_[r] != 0
              : std::all_of(row_.begin(), row_.end(), [](float x) { return std::isfinite(x); });
    (*tokens)[r] = finite ? s->Sample(row_.data(), vocab) : -1;  // never a made-up token
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenLogprob> ModelRunner::Logprob(int64_t row, int32_t id, int top_n) {
  if (row < 0 || row >= logit_rows_ready_) {
    return absl::FailedPreconditionError(absl::StrCat("Logprob asked for row ", row, " of the ",
                                                      logit_rows_ready_, " logits rows left"));
  }
  const int64_t vocab = weights_->config.vocab_size;
  row_.resize(static_cast<size_t>(vocab));
  backend_->ToHost(row_.data(), logits_dev_.data() + row * vocab, row_.size() * sizeof(float));
  MOE_RETURN_IF_ERROR(backend_->Sync());
  return RowLogprob(row_.data(), vocab, id, top_n);
}

std::string ModelRunner::DescribeNonFinite(KvCache& cache, int64_t position) {
  // A layer's keys and values at a position are projections of RMSNorm(its input there); a NaN or
  // Inf anywhere in that input makes the whole normalized row NaN. So the first layer whose keys or
  // values there are not finite is the first whose input was not: the layer before made it.
  const int layers = weights_->config.num_hidden_layers;
  const int64_t width = cache.row_width();
  std::vector<float> row(static_cast<size_t>(width));
  auto finite = [&](const float* dev) {
    backend_->ToHost(row.data(), dev + position * width, row.size() * sizeof(float));
    if (!backend_->Sync().ok()) return true;  // cannot tell: say nothing wrong here
    return std::all_of(row.begin(), row.end(), [](float x) { return std::isfinite(x); });
  };
  for (int l = 0; l < layers; ++l) {
    if (!finite(cache.keys(l)) || !finite(cache.values(l))) {
      return l == 0 ? "layer 0's keys and values there are already not finite (its attention "
                      "projections)"
                    : absl::StrCat("layer ", l - 1,
                                   " made them: its output there is not finite (layer ", l,
                                   "'s keys and values are the first that are not)");
    }
  }
  return absl::StrCat(
      "layer ", layers - 1,
      " (its attention or experts) or the final norm and lm_head made them: every layer's input "
      "there is finite");
}

void ModelRunner::BeginSequence(uint64_t sequence_id, const SequenceInfo& info) {
  for (RoutingObserver* observer : observers_) observer->OnSequenceStart(sequence_id, info);
}

void ModelRunner::EndSequence(uint64_t sequence_id) {
  for (RoutingObserver* observer : observers_) observer->OnSequenceEnd(sequence_id);
}

void ModelRunner::Attention(int layer, const MicroBatch& mb) {
  const MixtralConfig& c = weights_->config;
  const LayerTensors& w = layers_[layer];
  kernels::Backend* b = backend_;
  const int64_t n = mb.n, hidden = c.hidden_size;
  const int64_t q_width = static_cast<int64_t>(c.num_attention_heads) * c.head_dim;
  const int64_t kv_width = static_cast<int64_t>(c.num_key_value_heads) * c.head_dim;
  // This micro-batch's rows of every activation.
  float* h = h_.data() + mb.first_row * hidden;
  float* x = x_.data() + mb.first_row * hidden;
  float* q = q_.data() + mb.first_row * q_width;
  float* k = k_.data() + mb.first_row * kv_width;
  float* v = v_.data() + mb.first_row * kv_width;
  float* attn = attn_.data() + mb.first_row * q_width;
  float* proj = proj_.data() + mb.first_row * hidden;
  {
    StageTimer t(times_, Op::kNorm, b);
    b->RmsNorm(h, w.input_norm, n, hidden, static_cast<float>(c.rms_norm_eps), x);
  }
  {
    StageTimer t(times_, Op::kQkv, b);
    b->MatMul(x, n, w.q_proj, q);
    b->MatMul(x, n, w.k_proj, k);
    b->MatMul(x, n, w.v_proj, v);
  }
  {
    StageTimer t(times_, Op::kRope, b);
    const float theta = static_cast<float>(c.rope_theta);
    const int32_t* positions =
        (b->host_memory() ? positions_.data() : positions_dev_.data()) + mb.first_row;
    b->ApplyRope(q, positions, n, c.num_attention_heads, c.head_dim, theta);
    b->ApplyRope(k, positions, n, c.num_key_value_heads, c.head_dim, theta);
  }
  {
    StageTimer t(times_, Op::kAttention, b);
    int64_t row = 0;
    for (const SequenceChunk& chunk : mb.chunks) {
      const int64_t len = static_cast<int64_t>(chunk.tokens.size());
      const int64_t first_pos = chunk.cache->length();
      const size_t bytes = static_cast<size_t>(len * kv_width) * sizeof(float);
      b->Copy(chunk.cache->keys(layer) + first_pos * kv_width, k + row * kv_width, bytes);
      b->Copy(chunk.cache->values(layer) + first_pos * kv_width, v + row * kv_width, bytes);
      kernels::AttentionShape shape;
      shape.n_new = len;
      shape.first_pos = first_pos;
      shape.n_heads = c.num_attention_heads;
      shape.n_kv_heads = c.num_key_value_heads;
      shape.head_dim = c.head_dim;
      shape.window = c.sliding_window;
      b->Attention(q + row * q_width, chunk.cache->keys(layer), chunk.cache->values(layer), shape,
                   attn + row * q_width);
      row += len;
    }
  }
  StageTimer t(times_, Op::kOutProj, b);
  b->MatMul(attn, n, w.o_proj, proj);
  b->AddInPlace(h, proj, n * hidden);
}

absl::Status ModelRunner::RunLayers(const MicroBatch mb[2], int n_micro) {
  const int layers = weights_->config.num_hidden_layers;
  if (n_micro == 1) {
    for (int l = 0; l < layers; ++l) {
      Attention(l, mb[0]);
      MOE_RETURN_IF_ERROR(RouteAndPost(l, mb[0], 0));
      MOE_RETURN_IF_ERROR(CompleteExchange(0));
      Combine(l, mb[0], 0);
    }
  } else {
    // Ping-pong: while A's rows are with the workers, B's attention runs here, and the other way
    // round. Posts and completions alternate A, B, A, B, ... (the exchange's order).
    Attention(0, mb[0]);
    MOE_RETURN_IF_ERROR(RouteAndPost(0, mb[0], 0));
    for (int l = 0; l < layers; ++l) {
      Attention(l, mb[1]);
      MOE_RETURN_IF_ERROR(RouteAndPost(l, mb[1], 1));
      MergeRouting(l, n_micro);  // before A's next layer reuses its routing
      MOE_RETURN_IF_ERROR(CompleteExchange(0));
      Combine(l, mb[0], 0);
      if (l + 1 < layers) {
        Attention(l + 1, mb[0]);
        MOE_RETURN_IF_ERROR(RouteAndPost(l + 1, mb[0], 0));
      }
      MOE_RETURN_IF_ERROR(CompleteExchange(1));
      Combine(l, mb[1], 1);
    }
  }

  return absl::OkStatus();
}

int ModelRunner::SplitMicroBatches(absl::Span<const SequenceChunk> chunks, int64_t n, bool decode,
                                   MicroBatch out[2], bool* asked) {
  out[0] = MicroBatch{chunks, 0, n};
  *asked = false;
  if (chunks.size() < 2 || !exchange_->overlaps()) return 1;
  *asked = true;
  if (!overlap_.Split(n, decode)) return 1;
  // The first chunks up to about half the tokens, the rest after: sequences stay whole, so each
  // micro-batch's attention reads only its own caches.
  size_t split = 1;
  int64_t rows = static_cast<int64_t>(chunks[0].tokens.size());
  while (split + 1 < chunks.size() &&
         rows + static_cast<int64_t>(chunks[split].tokens.size()) / 2 <= n / 2) {
    rows += static_cast<int64_t>(chunks[split].tokens.size());
    ++split;
  }
  out[0] = MicroBatch{chunks.subspan(0, split), 0, rows};
  out[1] = MicroBatch{chunks.subspan(split), rows, n - rows};
  return 2;
}

void ModelRunner::MergeRouting(int layer, int n_micro) {
  Routing& all = routing_[layer];
  all.top_k = micro_routing_[0].top_k;
  all.expert.clear();
  all.weight.clear();
  all.logits.clear();
  for (int m = 0; m < n_micro; ++m) {
    const Routing& r = micro_routing_[m];
    all.expert.insert(all.expert.end(), r.expert.begin(), r.expert.end());
    all.weight.insert(all.weight.end(), r.weight.begin(), r.weight.end());
    all.logits.insert(all.logits.end(), r.logits.begin(), r.logits.end());
  }
}

absl::Status ModelRunner::RouteAndPost(int layer, const MicroBatch& mb, int m) {
  const MixtralConfig& c = weights_->config;
  const LayerTensors& w = layers_[layer];
  kernels::Backend* b = backend_;
  const int64_t hidden = c.hidden_size, n = mb.n;
  const int k = c.num_experts_per_tok;
  // A whole step routes straight into routing_[layer]; a micro-batch into its own, merged after.
  Routing& routing =
      mb.n == static_cast<int64_t>(positions_.size()) ? routing_[layer] : micro_routing_[m];
  float* x = x_.data() + mb.first_row * hidden;
  float* router_logits = router_logits_.data() + mb.first_row * c.num_local_experts;
  int32_t* experts = experts_dev_.data() + mb.first_row * k;
  float* weights = weights_dev_.data() + mb.first_row * k;
  float* rows = rows_dev_.data() + mb.first_row * k * hidden;
  float* out = expert_out_dev_.data() + mb.first_row * k * hidden;
  DispatchPlan& plan = plans_[m];
  {
    StageTimer t(times_, Op::kNorm, b);
    b->RmsNorm(h_.data() + mb.first_row * hidden, w.post_norm, n, hidden,
               static_cast<float>(c.rms_norm_eps), x);
  }
  {
    StageTimer t(times_, Op::kRouter, b);
    b->MatMul(x, n, w.router, router_logits);                                  // [n, experts]
    b->RouteTopK(router_logits, n, c.num_local_experts, k, experts, weights);  // [n, k] each
    // The plan is made on the host: the exchange, the observers and telemetry all need it there.
    routing.top_k = k;
    routing.expert.resize(static_cast<size_t>(n * k));
    routing.weight.resize(static_cast<size_t>(n * k));
    b->ToHost(routing.expert.data(), experts, routing.expert.size() * sizeof(int32_t));
    b->ToHost(routing.weight.data(), weights, routing.weight.size() * sizeof(float));
    // The raw logits too, for an observer that reads them (the trace's router entropy needs the
    // whole distribution, not only the top-k that survived); nobody else pays for the copy.
    if (copy_router_logits_) {
      routing.logits.resize(static_cast<size_t>(n * c.num_local_experts));
      b->ToHost(routing.logits.data(), router_logits, routing.logits.size() * sizeof(float));
    } else {
      routing.logits.clear();
    }
    MOE_RETURN_IF_ERROR(b->Sync());
    PlanDispatch(routing, n, exchange_->placement(), layer, hidden, &plan);
    b->GatherRows(x, Stage(plan.source_token, &source_token_dev_[m]), n * k, hidden,
                  rows);             // [n * k, hidden], grouped by slot
    MOE_RETURN_IF_ERROR(b->Sync());  // the exchange reads the rows once the backend is done
  }
  StageTimer t(times_, Op::kExchange, b);
  return exchange_->Post(plan.layout, rows, out, m);
}

absl::Status ModelRunner::CompleteExchange(int m) {
  StageTimer t(times_, Op::kExchange, backend_);
  return exchange_->Complete(m);
}

void ModelRunner::Combine(int layer, const MicroBatch& mb, int m) {
  const MixtralConfig& c = weights_->config;
  kernels::Backend* b = backend_;
  const int64_t hidden = c.hidden_size;
  const int k = c.num_experts_per_tok;
  StageTimer t(times_, Op::kCombine, b);
  b->CombineRows(expert_out_dev_.data() + mb.first_row * k * hidden,
                 Stage(plans_[m].row_of_choice, &row_of_choice_dev_[m]),
                 experts_dev_.data() + mb.first_row * k, weights_dev_.data() + mb.first_row * k,
                 mb.n, k, hidden, h_.data() + mb.first_row * hidden);
}

}  // namespace moe
