// ModelRunner: the attention side of the forward pass (embeddings, attention with a KV cache,
// router, combine, final norm, lm_head) for a batch of sequence chunks. Experts are reached only
// through an ExpertExchange, so one forward pass serves the single-process tools and the cluster.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "coordinator/inference/kv_cache.h"
#include "coordinator/inference/logprobs.h"
#include "coordinator/inference/moe_routing.h"
#include "coordinator/inference/overlap_policy.h"
#include "coordinator/inference/routing_observer.h"
#include "coordinator/inference/sampler.h"
#include "core/base/op_timer.h"
#include "core/exchange/expert_exchange.h"
#include "core/model/model_weights.h"
#include "kernels/backend.h"

namespace moe {

// New tokens of one sequence, appended after what its cache already holds.
struct SequenceChunk {
  KvCache* cache = nullptr;          // not owned
  absl::Span<const int32_t> tokens;  // [n_new]
  bool all_logits = false;           // logits for every new token, else only the last
  uint64_t sequence_id = 1;          // names the sequence to routing observers
  bool prefill = false;              // prompt tokens (observers tell them from sampled ones)
};

class ModelRunner {
 public:
  // weights must hold the attention side; exchange reaches every expert; backend runs the
  // attention side and holds its copy of the weights (CUDA uploads them here, which can fail).
  // None is owned.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(const ModelWeights* weights,
                                                             ExpertExchange* exchange,
                                                             kernels::Backend* backend,
                                                             OpTimes* times = nullptr);

  // Runs every chunk's tokens as one batch through all layers, appending to their caches.
  // logits: [rows, vocab], rows in chunk order (all of a chunk's tokens, or its last); null keeps
  // them in the backend's memory for SampleNext. Fails, changing no cache, on token ids outside
  // the vocabulary or positions beyond max_position_embeddings.
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, std::vector<float>* logits);

  // The next token of each logits row of the last successful Forward: samplers[i] draws row i
  // (null: skip it, tokens[i] = -1). Exactly what each Sampler::Sample gives on the row, but a GPU
  // sends back only each row's best candidates (Backend::TopK), unless a sampler needs the
  // whole row (sampling without top_k) or the row holds a non-finite logit.
  // A row whose logits are not all finite gets token -1 (never a made-up one): its request must
  // fail (DescribeNonFinite says where the model went wrong).
  absl::Status SampleNext(absl::Span<Sampler* const> samplers, std::vector<int32_t>* tokens);
  // The log-probability of `id` under logits row `row` of the last successful Forward (rows as
  // SampleNext numbers them), with the row's top_n most likely ids
  // (coordinator/inference/logprobs.h).
  absl::StatusOr<TokenLogprob> Logprob(int64_t row, int32_t id, int top_n);
  // Which layer made a sequence's hidden state non-finite at `position` (already run): read back
  // from its KV cache. For an error message; slow, only on that rare path.
  std::string DescribeNonFinite(KvCache& cache, int64_t position);

  // Micro-batching applies only where the exchange overlaps (ExpertExchange::overlaps) and the
  // step has two chunks or more; the policy decides the rest
  // (coordinator/inference/overlap_policy.h).
  void set_overlap(const OverlapPolicy& policy) { overlap_ = OverlapChooser(policy); }
  const OverlapChooser& overlap() const { return overlap_; }
  // 1 or 2: how the last Forward ran.
  int last_micro_batches() const { return last_micro_batches_; }

  KvCache NewCache() const;
  const MixtralConfig& config() const { return weights_->config; }
  kernels::Backend* backend() const { return backend_; }
  // Routing of the last Forward, per layer; kept for tests and telemetry.
  const std::vector<Routing>& last_routing() const { return routing_; }
  // Observers see every successful Forward's routing; not owned, must outlive the runner.
  void AddRoutingObserver(RoutingObserver* observer) {
    observers_.push_back(observer);
    copy_router_logits_ = copy_router_logits_ || observer->WantsRouterLogits();
  }
  // Tell the observers that a sequence joins the batch / is done (the scheduler calls both, as do
  // the one-shot tools that drive Forward themselves).
  void BeginSequence(uint64_t sequence_id, const SequenceInfo& info);
  void EndSequence(uint64_t sequence_id);

 private:
  // The attention side's weights as the backend reads them.
  struct LayerTensors {
    const float* input_norm;
    WeightMatrix q_proj, k_proj, v_proj, o_proj;
    const float* post_norm;
    WeightMatrix router;  // float32 on every backend: routing must not flip on rounding
  };

  ModelRunner(const ModelWeights* weights, ExpertExchange* exchange, OpTimes* times,
              kernels::Backend* backend);
  absl::Status Upload();
  absl::Status Validate(absl::Span<const SequenceChunk> chunks) const;
  absl::Status Reserve(int64_t n, int64_t n_out);
  // The host array as the backend reads it: itself on the CPU, else copied into device.
  template <typename T>
  const T* Stage(const std::vector<T>& host, kernels::BackendArray<T>* device);
  // A contiguous run of the step's chunks and their rows of the batch.
  struct MicroBatch {
    absl::Span<const SequenceChunk> chunks;
    int64_t first_row = 0;
    int64_t n = 0;
  };
  // The step's chunks in one micro-batch, or two balanced by tokens (the policy permitting).
  // *asked: whether the chooser was asked (it is then told the step's time).
  int SplitMicroBatches(absl::Span<const SequenceChunk> chunks, int64_t n, bool decode,
                        MicroBatch out[2], bool* asked);
  absl::Status RunLayers(const MicroBatch mb[2], int n_micro);
  void Attention(int layer, const MicroBatch& mb);
  // Norm, router, the dispatch plan and the rows for the exchange; then Post (m: the micro-batch).
  absl::Status RouteAndPost(int layer, const MicroBatch& mb, int m);
  absl::Status CompleteExchange(int m);  // timed as the exchange, as Post is
  void Combine(int layer, const MicroBatch& mb, int m);
  // The micro-batches' routing of `layer` into routing_[layer], in batch order.
  void MergeRouting(int layer, int n_micro);

  const ModelWeights* weights_;
  ExpertExchange* exchange_;
  OpTimes* times_;
  kernels::Backend* backend_;
  WeightMatrix embed_, lm_head_;
  const float* final_norm_ = nullptr;
  std::vector<LayerTensors> layers_;

  // Host state of the step.
  std::vector<int32_t> tokens_;      // [n]
  std::vector<int32_t> positions_;   // [n]
  std::vector<int64_t> logit_rows_;  // [n_out] rows of h that need logits
  std::vector<Routing> routing_;     // [layers]
  std::vector<RoutingObserver*> observers_;
  bool copy_router_logits_ = false;  // some observer reads Routing::logits
  std::vector<RoutedToken> routed_;  // [n], for the observers
  DispatchPlan plans_[2];            // each micro-batch's current layer's, on the host
  Routing micro_routing_[2];         // each micro-batch's current layer's (split steps)
  OverlapChooser overlap_;
  int last_micro_batches_ = 1;

  // Backend scratch reused across steps so decoding does not allocate.
  kernels::BackendArray<int32_t> tokens_dev_, positions_dev_, experts_dev_;
  kernels::BackendArray<int64_t> row_of_choice_dev_[2], source_token_dev_[2], logit_rows_dev_;
  kernels::BackendArray<float> h_;               // [n, hidden] residual stream
  kernels::BackendArray<float> x_;               // [n, hidden] normed
  kernels::BackendArray<float> q_;               // [n, heads * head_dim]
  kernels::BackendArray<float> k_;               // [n, kv_heads * head_dim]
  kernels::BackendArray<float> v_;               // [n, kv_heads * head_dim]
  kernels::BackendArray<float> attn_;            // [n, heads * head_dim]
  kernels::BackendArray<float> proj_;            // [n, hidden]
  kernels::BackendArray<float> router_logits_;   // [n, experts]
  kernels::BackendArray<float> weights_dev_;     // [n, top_k] routing weights
  kernels::BackendArray<float> rows_dev_;        // [n * top_k, hidden] dispatched rows, by slot
                                                 // (micro-batch m's from its first_row * top_k)
  kernels::BackendArray<float> expert_out_dev_;  // [n * top_k, hidden] their experts' outputs
  kernels::BackendArray<float> logits_dev_;      // [n_out, vocab]
  int64_t logit_rows_ready_ = 0;                 // rows of logits_dev_ the last Forward left

  // Sampling candidates (SampleNext), in the backend and on the host.
  kernels::BackendArray<float> candidate_values_dev_;
  kernels::BackendArray<int32_t> candidate_ids_dev_, all_finite_dev_;
  std::vector<float> candidate_values_, row_;
  std::vector<int32_t> candidate_ids_, all_finite_;
};

}  // namespace moe
