#include "coordinator/inference/scheduler.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace moe {

std::vector<StreamEvent> RequestHandle::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](std::deque<StreamEvent>* e) { return !e->empty(); }, &events_),
                       timeout);
  std::vector<StreamEvent> out(std::make_move_iterator(events_.begin()),
                               std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

void RequestHandle::Push(StreamEvent event) {
  absl::MutexLock lock(&mu_);
  events_.push_back(std::move(event));
}

Scheduler::Sequence::Sequence(Pending p, KvCache kv, const Tokenizer* tokenizer, int64_t bytes)
    : id(p.id),
      request(std::move(p.request)),
      handle(std::move(p.handle)),
      arrival(p.arrival),
      arrival_steady(p.arrival_steady),
      cache(std::move(kv)),
      sampler(request.sampling),
      text(tokenizer, request.stop, request.prompt, request.min_tokens),
      kv_bytes(bytes) {}

void Scheduler::Sequence::PrepareSampler(const MixtralConfig& config) {
  sampler.SetPrompt(request.prompt);
  if (request.min_tokens > 0) {
    // vLLM's min_tokens: every id that would end the sequence, EOS (unless ignored) and the stop
    // token ids, is banned until then.
    std::vector<int32_t> ends(request.stop_token_ids);
    if (!request.ignore_eos)
      ends.insert(ends.end(), config.eos_token_ids.begin(), config.eos_token_ids.end());
    sampler.Ban(ends, request.min_tokens);
  }
}

absl::Status SchedulerOptions::Validate() const {
  if (max_batch_tokens < 1) return absl::InvalidArgumentError("--max-batch-tokens must be >= 1");
  if (max_running < 1) return absl::InvalidArgumentError("--max-running must be >= 1");
  if (max_waiting < 1) return absl::InvalidArgumentError("--max-queue must be >= 1");
  if (kv_budget_bytes < 1) return absl::InvalidArgumentError("--kv-cache-mb must be >= 1");
  return limits.Validate();
}

int64_t Scheduler::KvBytesPerPosition(const MixtralConfig& c) {
  return 2 * static_cast<int64_t>(c.num_hidden_layers) * c.num_key_value_heads * c.head_dim *
         static_cast<int64_t>(sizeof(float));
}

Scheduler::Scheduler(ModelRunner* runner, const Tokenizer* tokenizer, SchedulerOptions options)
    : runner_(runner),
      tokenizer_(tokenizer),
      options_(options),
      kv_bytes_per_position_(KvBytesPerPosition(runner->config())) {
  stats_.kv_bytes_budget = options_.kv_budget_bytes;
}

absl::StatusOr<std::shared_ptr<RequestHandle>> Scheduler::Submit(Request request) {
  if (absl::Status valid = request.Validate(runner_->config(), options_.limits); !valid.ok())
    return valid;
  const int64_t need = KvBytes(static_cast<int64_t>(request.prompt.size()) + request.max_tokens);
  if (need > options_.kv_budget_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt + max_tokens need ", need >> 20,
                     " MiB of KV cache, more than the server's budget of ",
                     options_.kv_budget_bytes >> 20, " MiB"));
  }
  auto handle = std::make_shared<RequestHandle>();
  absl::MutexLock lock(&mu_);
  if (stopped_.has_value()) return *stopped_;
  DropCancelledWaiting();
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server's queue is full (", options_.max_waiting, " requests waiting); retry later"));
  }
  handle->id_ = ++last_id_;
  const double steady =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  waiting_.push_back(Pending{last_id_, std::move(request), handle, absl::Now(), steady});
  stats_.waiting = static_cast<int>(waiting_.size());
  work_.Signal();
  return handle;
}

void Scheduler::StopAdmitting(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  stopped_ = why;
}

void Scheduler::ResumeAdmitting() {
  absl::MutexLock lock(&mu_);
  stopped_.reset();
}

bool Scheduler::WaitForWork(absl::Duration timeout) {
  if (!running_.empty()) return true;
  absl::MutexLock lock(&mu_);
  if (waiting_.empty()) work_.WaitWithTimeout(&mu_, timeout);
  return !waiting_.empty();
}

void Scheduler::DropCancelledWaiting() {
  const size_t before = waiting_.size();
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                [](const Pending& p) { return p.handle->cancelled(); }),
                 waiting_.end());
  stats_.served += static_cast<int64_t>(before - waiting_.size());
  stats_.waiting = static_cast<int>(waiting_.size());
}

void Scheduler::Admit() {
  // Requests whose clients left go first, freeing their KV cache for admission.
  for (auto& seq : running_) {
    if (seq->handle->cancelled()) Finish(seq.get());  // its handler has answered the client
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  const size_t first_admitted = running_.size();
  {
    absl::MutexLock lock(&mu_);
    AdmitLocked();
  }
  // Outside the lock: observers may write (the trace's events), and Submit must not wait on that.
  for (size_t i = first_admitted; i < running_.size(); ++i) {
    const Sequence& seq = *running_[i];
    SequenceInfo info;
    info.label = seq.request.label;
    info.prompt_tokens = static_cast<int32_t>(seq.request.prompt.size());
    info.max_tokens = seq.request.max_tokens;
    info.arrival_seconds = seq.arrival_steady;
    runner_->BeginSequence(seq.id, info);
  }
}

void Scheduler::AdmitLocked() {
  DropCancelledWaiting();  // clients that gave up while waiting hold no place in the queue
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    Pending& p = waiting_.front();
    const int64_t positions = static_cast<int64_t>(p.request.prompt.size()) + p.request.max_tokens;
    const int64_t bytes = KvBytes(positions);
    if (stats_.kv_bytes_used + bytes > options_.kv_budget_bytes) break;  // first come, first served
    KvCache cache = runner_->NewCache();
    if (absl::Status reserved = cache.Reserve(positions); !reserved.ok()) {
      // Within the byte budget but not in the device's memory: this request fails, others go on.
      StreamEvent failed;
      failed.error = reserved;
      p.handle->Push(std::move(failed));
      ++stats_.served;
      waiting_.pop_front();
      continue;
    }
    stats_.kv_bytes_used += bytes;
    running_.push_back(
        std::make_unique<Sequence>(std::move(p), std::move(cache), tokenizer_, bytes));
    running_.back()->PrepareSampler(runner_->config());
    running_.back()->admitted = absl::Now();
    waiting_.pop_front();
  }
  stats_.waiting = static_cast<int>(waiting_.size());
  stats_.running = static_cast<int>(running_.size());
}

absl::Status Scheduler::Step() {
  Admit();
  if (running_.empty()) return absl::OkStatus();
  const Batch batch = Schedule();
  if (absl::Status run = runner_->Forward(batch.chunks, /*logits=*/nullptr); !run.ok()) return run;
  {
    absl::MutexLock lock(&mu_);
    ++stats_.steps;
    for (const SequenceChunk& chunk : batch.chunks)
      stats_.tokens += static_cast<int64_t>(chunk.tokens.size());
    stats_.split_steps += runner_->last_micro_batches() == 2;
  }
  return Postprocess(batch);
}

Scheduler::Batch Scheduler::Schedule() {
  Batch batch;
  int64_t budget = options_.max_batch_tokens;
  for (auto& seq : running_) {
    if (seq->next_token >= 0 && budget > 0) {
      batch.chunks.push_back(
          {&seq->cache, absl::MakeConstSpan(&seq->next_token, 1), false, seq->id});
      batch.owners.push_back(seq.get());
      --budget;
    }
  }
  for (auto& seq : running_) {
    const size_t left = seq->request.prompt.size() - seq->prefilled;
    if (seq->next_token >= 0 || left == 0 || budget <= 0) continue;
    const size_t n = std::min<size_t>(left, static_cast<size_t>(budget));
    batch.chunks.push_back(
        {&seq->cache, absl::MakeConstSpan(seq->request.prompt).subspan(seq->prefilled, n),
         /*all_logits=*/seq->request.prompt_logprobs, seq->id, /*prefill=*/true});
    batch.owners.push_back(seq.get());
    budget -= static_cast<int64_t>(n);
  }
  return batch;
}

absl::Status Scheduler::Postprocess(const Batch& batch) {
  const size_t n = batch.chunks.size();
  // One logits row per chunk, or one per token for a chunk that asked for them all (prompt
  // log-probabilities); only a chunk's last row is sampled.
  samplers_.clear();
  last_rows_.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const SequenceChunk& chunk = batch.chunks[i];
    Sequence* seq = batch.owners[i];
    const int64_t first_row = static_cast<int64_t>(samplers_.size());
    samplers_.resize(samplers_.size() + (chunk.all_logits ? chunk.tokens.size() : 1), nullptr);
    last_rows_[i] = static_cast<int64_t>(samplers_.size()) - 1;
    if (seq->next_token < 0) {
      if (chunk.all_logits) MOE_RETURN_IF_ERROR(GatherPromptLogprobs(seq, chunk, first_row));
      seq->prefilled += chunk.tokens.size();
      if (seq->prefilled < seq->request.prompt.size()) continue;  // more prompt to come
    }
    samplers_[last_rows_[i]] = &seq->sampler;
  }
  if (absl::Status sampled = runner_->SampleNext(samplers_, &sampled_); !sampled.ok())
    return sampled;
  for (size_t i = 0; i < n; ++i) {
    const int64_t row = last_rows_[i];
    if (samplers_[row] == nullptr) continue;
    Sequence* seq = batch.owners[i];
    if (const int32_t id = sampled_[row]; id >= 0) {
      TokenLogprob logprob;
      if (seq->request.logprobs >= 0) {
        absl::StatusOr<TokenLogprob> lp = runner_->Logprob(row, id, seq->request.logprobs);
        if (!lp.ok()) return lp.status();
        logprob = *std::move(lp);
      }
      Advance(seq, id, std::move(logprob));
      continue;
    }
    // Non-finite logits: this request fails, naming the layer; the others in the batch go on
    // (rows do not mix).
    const int64_t position = seq->cache.length() - 1;
    StreamEvent failed;
    failed.error = absl::InternalError(
        absl::StrCat("the model's logits are not finite (NaN or Inf) at position ", position, ": ",
                     runner_->DescribeNonFinite(seq->cache, position)));
    auto handle = seq->handle;
    Finish(seq);
    handle->Push(std::move(failed));
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  absl::MutexLock lock(&mu_);
  stats_.running = static_cast<int>(running_.size());
  return absl::OkStatus();
}

absl::Status Scheduler::GatherPromptLogprobs(Sequence* seq, const SequenceChunk& chunk,
                                             int64_t first_row) {
  // Row j holds the logits after the chunk's token j: they predict the prompt's next token, if the
  // prompt has one (the last prompt position predicts the first generated token instead).
  const std::vector<int32_t>& prompt = seq->request.prompt;
  for (size_t j = 0; j < chunk.tokens.size(); ++j) {
    const size_t target = seq->prefilled + j + 1;
    if (target >= prompt.size()) break;
    absl::StatusOr<TokenLogprob> lp = runner_->Logprob(
        first_row + static_cast<int64_t>(j), prompt[target], std::max(seq->request.logprobs, 0));
    if (!lp.ok()) return lp.status();
    seq->prompt_logprobs.push_back(*std::move(lp));
  }
  return absl::OkStatus();
}

bool Scheduler::Advance(Sequence* seq, int32_t id, TokenLogprob logprob) {
  StreamEvent event;
  if (seq->generated == 0) event.prompt_logprobs = std::move(seq->prompt_logprobs);
  if (seq->request.logprobs >= 0) event.logprobs.push_back(std::move(logprob));
  event.sampled_at = absl::Now();
  if (seq->generated++ == 0) seq->first_token = event.sampled_at;
  seq->sampler.Accept(id);
  const Request& r = seq->request;
  const bool is_eos = runner_->config().IsEos(id);
  const bool eos = is_eos && !r.ignore_eos;
  const bool stop_id =
      std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), id) != r.stop_token_ids.end();
  event.token_ids.push_back(id);
  // Ending tokens, and EOS even when ignored, have no text.
  if (!is_eos && !stop_id) event.text = seq->text.Push(id);
  if (eos || stop_id || seq->text.stopped() || seq->generated >= r.max_tokens) {
    // The finishing token and the last of the text ride on the final event. The held-back tail
    // can itself complete a stop string, so the reason is decided after it.
    event.text += seq->text.Finish();
    const FinishReason reason = seq->text.stopped() || stop_id ? FinishReason::kStop
                                : eos                          ? FinishReason::kEos
                                                               : FinishReason::kLength;
    const absl::Time now = absl::Now();
    event.finish = reason;
    event.prompt_tokens = static_cast<int>(seq->request.prompt.size());
    event.generated_tokens = seq->generated;
    event.time_to_first_token_ms = absl::ToDoubleMilliseconds(seq->first_token - seq->arrival);
    event.queue_ms = absl::ToDoubleMilliseconds(seq->admitted - seq->arrival);
    event.total_ms = absl::ToDoubleMilliseconds(now - seq->arrival);
    // Accounted before the client hears of it, so a GetModelInfo after the stream ends sees it.
    auto handle = seq->handle;
    Finish(seq);
    handle->Push(std::move(event));
    return true;
  }
  seq->next_token = id;
  seq->handle->Push(std::move(event));
  return false;
}

void Scheduler::Finish(Sequence* seq) {
  runner_->EndSequence(seq->id);
  {
    absl::MutexLock lock(&mu_);
    stats_.kv_bytes_used -= seq->kv_bytes;
    ++stats_.served;
  }
  for (auto& s : running_) {
    if (s.get() == seq) s.reset();
  }
}

void Scheduler::FailAll(const absl::Status& status) {
  StreamEvent e;
  e.error = status;
  for (auto& seq : running_) {
    if (seq) {
      runner_->EndSequence(seq->id);
      seq->handle->Push(e);
    }
  }
  running_.clear();
  absl::MutexLock lock(&mu_);
  for (Pending& p : waiting_) p.handle->Push(e);
  waiting_.clear();
  // Nothing runs or waits any more; the counters since start stay.
  stats_.running = stats_.waiting = 0;
  stats_.kv_bytes_used = 0;
}

SchedulerStats Scheduler::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moe
