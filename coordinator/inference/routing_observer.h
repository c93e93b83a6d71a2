// RoutingObserver: sees the router's decisions of every forward step, with which sequence and
// position each row belongs to. Telemetry (load aggregation) and routing traces hang here, off the
// step's critical path: observers get read-only views and must be cheap (no I/O that can block).
#pragma once

#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "coordinator/inference/moe_routing.h"

namespace moe {

// One row of a forward step.
struct RoutedToken {
  uint64_t sequence_id = 0;
  int32_t position = 0;  // in its sequence
  int32_t token = 0;     // the id fed at that position
  bool prefill = false;  // a prompt token (fed in a prefill chunk), not a sampled one
  // The step's second micro-batch (ModelRunner's ping-pong): its experts' dispatch was planned
  // apart from the first's, so a replay of the split rule over replicas plans it apart too.
  bool second_micro_batch = false;
};

// A sequence as it enters the batch, for observers that group by request.
struct SequenceInfo {
  std::string label;  // the client's workload label ("" = none)
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;      // tokens it may generate (0: none, e.g. a logits dump)
  double arrival_seconds = 0;  // when the request arrived, steady clock (0: unknown)
};

class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  // Around every forward step, whether it succeeds or not (before its first exchange; after its
  // last exchange and OnForward).
  virtual void OnStepBegin() {}
  virtual void OnStepEnd() {}
  // After every successful forward step. tokens: the step's rows in batch order; routing: per
  // layer, the choices of those rows (routing[l].expert[row * top_k + j]) and their raw router
  // logits (routing[l].logits[row * n_experts + e]).
  virtual void OnForward(absl::Span<const RoutedToken> tokens,
                         absl::Span<const Routing> routing) = 0;
  // Whether OnForward reads routing[l].logits. Copying them off the device costs every layer of
  // every step, so the runner fills them only when some observer says yes.
  virtual bool WantsRouterLogits() const { return false; }
  // The sequence joins the batch (the scheduler admitted it), before its first token is routed.
  virtual void OnSequenceStart(uint64_t /*sequence_id*/, const SequenceInfo& /*info*/) {}
  // The sequence is finished; its id will not appear again.
  virtual void OnSequenceEnd(uint64_t /*sequence_id*/) {}
};

}  // namespace moe
