// ModelRunner: the attention side of the forward pass (embeddings, attention with a KV cache,
// router, combine, final norm, lm_head) for a batch of sequence chunks. Experts are reached only
// through an ExpertExchange, so one forward pass serves the single-process tools and the cluster.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "coordinator/kv_cache.h"
#include "coordinator/moe_routing.h"
#include "coordinator/routing_observer.h"
#include "core/expert_exchange.h"
#include "core/model_weights.h"
#include "core/op_timer.h"

namespace moe {

// New tokens of one sequence, appended after what its cache already holds.
struct SequenceChunk {
  KvCache* cache = nullptr;          // not owned
  absl::Span<const int32_t> tokens;  // [n_new]
  bool all_logits = false;           // logits for every new token, else only the last
  uint64_t sequence_id = 1;          // names the sequence to routing observers
};

class ModelRunner {
 public:
  // weights must hold the attention side; exchange reaches every expert. Neither is owned.
  ModelRunner(const ModelWeights* weights, ExpertExchange* exchange, OpTimes* times = nullptr);

  // Runs every chunk's tokens as one batch through all layers, appending to their caches.
  // logits: [rows, vocab], rows in chunk order (all of a chunk's tokens, or its last).
  // Fails, changing no cache, on token ids outside the vocabulary or positions beyond
  // max_position_embeddings.
  absl::Status Forward(absl::Span<const SequenceChunk> chunks, std::vector<float>* logits);

  KvCache NewCache() const;
  const MixtralConfig& config() const { return weights_->config; }
  // Routing of the last Forward, per layer; kept for tests and telemetry.
  const std::vector<Routing>& last_routing() const { return routing_; }
  // Observers see every successful Forward's routing; not owned, must outlive the runner.
  void AddRoutingObserver(RoutingObserver* observer) { observers_.push_back(observer); }
  // Tells the observers that a sequence is done (the scheduler and Generate call it).
  void EndSequence(uint64_t sequence_id);

 private:
  absl::Status Validate(absl::Span<const SequenceChunk> chunks) const;
  void Attention(int layer, absl::Span<const SequenceChunk> chunks);
  absl::Status MoeBlock(int layer, int64_t n);

  const ModelWeights* weights_;
  ExpertExchange* exchange_;
  OpTimes* times_;

  // Scratch reused across steps so decoding does not allocate.
  std::vector<int32_t> positions_;  // [n]
  std::vector<float> h_;            // [n, hidden] residual stream
  std::vector<float> x_;            // [n, hidden] normed
  std::vector<float> q_;            // [n, heads * head_dim]
  std::vector<float> k_;            // [n, kv_heads * head_dim]
  std::vector<float> v_;            // [n, kv_heads * head_dim]
  std::vector<float> attn_;         // [n, heads * head_dim]
  std::vector<float> proj_;         // [n, hidden]
  std::vector<float> router_logits_;  // [n, experts]
  std::vector<Routing> routing_;      // [layers]
  std::vector<RoutingObserver*> observers_;
  std::vector<RoutedToken> routed_;   // [n], for the observers
  ExpertBatch batch_;
  std::vector<int64_t> slot_;
  std::vector<float> expert_out_;
};

}  // namespace moe
