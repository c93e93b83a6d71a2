// Scheduler: continuous batching. Requests wait in a bounded queue, are admitted when their KV
// cache fits the budget, and every step runs one batch that mixes one decode token of each
// running sequence with chunks of prompts still being prefilled, up to a token budget; sequences
// join and leave between steps. Results flow back to each request's handle as stream events.
//
// Thread-safety: Submit(), stats() and every RequestHandle method may be called from any thread
// (the gRPC handlers); Step(), WaitForWork() and FailAll() only from the engine thread, the one
// that owns the ModelRunner (and MPI).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/inference/kv_cache.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/inference/request.h"
#include "coordinator/inference/sampler.h"
#include "coordinator/inference/text_stream.h"
#include "core/model/tokenizer.h"

namespace moe {

// What a handler receives. The last event of a request has finish != kNone or a non-OK error.
struct StreamEvent {
  std::vector<int32_t> token_ids;             // new tokens
  std::string text;                           // the text they complete
  std::vector<TokenLogprob> logprobs;         // of token_ids, when the request asks
  std::vector<TokenLogprob> prompt_logprobs;  // of the prompt's tokens after the first, on the
                                              // first event, when the request asks
  FinishReason finish = FinishReason::kNone;
  absl::Status error;     // the request failed (UNAVAILABLE when a worker is lost)
  int prompt_tokens = 0;  // usage, on the last event
  int generated_tokens = 0;
  double time_to_first_token_ms = 0;
  double queue_ms = -1;   // from arrival to admission into the batch, on the last event
  absl::Time sampled_at;  // when this event's token was sampled
  double total_ms = 0;
};

// One request's channel from the scheduler to its handler.
class RequestHandle {
 public:
  // Waits up to `timeout` for events and returns those that arrived (possibly none).
  std::vector<StreamEvent> Wait(absl::Duration timeout);
  // The client left or its deadline passed: the request leaves the batch at the next step and its
  // KV cache is freed. No further events are delivered.
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  // The server's request number (1, 2, ... in arrival order): the sequence id observers and the
  // routing trace know the request by. Set by Submit before the handle is returned.
  uint64_t id() const { return id_; }

 private:
  friend class Scheduler;
  void Push(StreamEvent event);

  uint64_t id_ = 0;
  absl::Mutex mu_;
  std::deque<StreamEvent> events_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int64_t max_batch_tokens = 512;              // tokens per step: decode tokens + prefill chunks
  int max_running = 64;                        // sequences in the batch at once
  int max_waiting = 256;                       // queue beyond which Submit says RESOURCE_EXHAUSTED
  int64_t kv_budget_bytes = int64_t{1} << 30;  // KV cache for all running sequences
  RequestLimits limits;                        // what Submit accepts beyond what the model allows

  // Says which field is out of range (every one must be positive).
  absl::Status Validate() const;
};

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_bytes_used = 0;  // reserved by running sequences
  int64_t kv_bytes_budget = 0;
  int64_t served = 0;       // requests finished (any reason) since start
  int64_t steps = 0;        // forward passes since start
  int64_t tokens = 0;       // tokens through the model since start (prompts and decoded)
  int64_t split_steps = 0;  // of which ran as two micro-batches (--overlap)
};

class Scheduler {
 public:
  // runner, tokenizer: not owned; the tokenizer turns tokens into text.
  Scheduler(ModelRunner* runner, const Tokenizer* tokenizer, SchedulerOptions options);

  // Bytes of KV cache one position of one sequence takes (every layer's keys and values).
  static int64_t KvBytesPerPosition(const MixtralConfig& config);
  // Bytes of KV cache a request of this many positions reserves.
  int64_t KvBytes(int64_t positions) const { return positions * kv_bytes_per_position_; }

  // Queues a request. INVALID_ARGUMENT when Request::Validate refuses it or its KV cache could
  // never fit the budget; RESOURCE_EXHAUSTED when the queue is full; UNAVAILABLE after
  // StopAdmitting().
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(Request request);
  // From now on Submit fails with `why` (graceful shutdown, a lost worker), until
  // ResumeAdmitting(). Requests already queued or running are not touched.
  void StopAdmitting(const absl::Status& why);
  void ResumeAdmitting();

  // Engine thread: waits up to `timeout` until there is work; true if there is.
  bool WaitForWork(absl::Duration timeout);
  // Engine thread: one batch: schedule (who runs, how many tokens each), run the forward pass,
  // postprocess (sample, stream, finish). A non-OK status means the model cannot run any more (a
  // worker was lost); the caller then fails everything with FailAll().
  absl::Status Step();
  // Engine thread: ends every waiting and running request with `status`.
  void FailAll(const absl::Status& status);

  SchedulerStats stats() const;

 private:
  struct Pending {
    uint64_t id;  // 1, 2, ... in arrival order; names the sequence in telemetry and traces
    Request request;
    std::shared_ptr<RequestHandle> handle;
    absl::Time arrival;
    double arrival_steady;  // seconds, steady clock: what observers get (SequenceInfo)
  };
  struct Sequence {
    Sequence(Pending p, KvCache cache, const Tokenizer* tokenizer, int64_t kv_bytes);
    // The sampler's view of the request: the prompt for its penalties, min_tokens' bans.
    void PrepareSampler(const MixtralConfig& config);
    uint64_t id;
    Request request;
    std::shared_ptr<RequestHandle> handle;
    absl::Time arrival;
    double arrival_steady;
    absl::Time admitted;
    absl::Time first_token;
    KvCache cache;
    Sampler sampler;
    TextStream text;
    int64_t kv_bytes;
    size_t prefilled = 0;  // prompt tokens already in the cache
    int generated = 0;
    int32_t next_token = -1;  // sampled, to be fed at the next step
    std::vector<TokenLogprob>
        prompt_logprobs;  // gathered during prefill, sent with the first token
  };

  // One step's work: a chunk of tokens per scheduled sequence, in batch order.
  struct Batch {
    std::vector<SequenceChunk> chunks;
    std::vector<Sequence*> owners;  // owners[i] sent chunks[i]
  };

  // Drops requests whose clients left, then admits waiting ones while the budgets allow, and
  // tells the observers of each one admitted (ModelRunner::BeginSequence).
  void Admit();
  // Admit's part under the lock: waiting requests into running_ while the budgets allow.
  void AdmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One decode token per sequence whose prompt is in its cache, then prompt chunks, within
  // max_batch_tokens.
  Batch Schedule();
  // After a successful forward pass: sequences whose prompt is now all in the cache draw and
  // stream their next token; finished ones leave the batch.
  absl::Status Postprocess(const Batch& batch);
  void DropCancelledWaiting() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The log-probabilities of the prompt tokens that a prefill chunk's logits rows predict (rows
  // first_row.. of the step, one per token of the chunk).
  absl::Status GatherPromptLogprobs(Sequence* seq, const SequenceChunk& chunk, int64_t first_row);
  // Streams `id`, the next token of `seq` (with its log-probability when asked); returns true when
  // the sequence finished.
  bool Advance(Sequence* seq, int32_t id, TokenLogprob logprob = {});
  // Frees the sequence's KV cache and removes it from running_ (leaves a null to compact).
  void Finish(Sequence* seq);

  ModelRunner* runner_;
  const Tokenizer* tokenizer_;
  SchedulerOptions options_;
  int64_t kv_bytes_per_position_;

  mutable absl::Mutex mu_;
  absl::CondVar work_;
  std::deque<Pending> waiting_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> stopped_ ABSL_GUARDED_BY(mu_);
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);

  // Engine thread only.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<int32_t> sampled_;    // the step's next tokens, reused
  std::vector<Sampler*> samplers_;  // [logits rows of the step]
  std::vector<int64_t> last_rows_;  // [chunks]: each chunk's last logits row
};

}  // namespace moe
