// The ExpertExchange over MPI (host memory) between the coordinator (rank 0) and the workers
// (ranks 1..W), and the worker's side of the same protocol.
//
// One exchange = one layer of one step. For every worker, in this order:
//   coordinator -> worker  StepHeader                     (tag kHeaderTag)
//   coordinator -> worker  int64 rows per expert [E]      (counts first: the dispatch layout)
//   coordinator -> worker  int32 expert id per row [n]    (rows grouped by expert, each with its id)
//   coordinator -> worker  float rows [n, hidden]
//   worker -> coordinator  ReplyHeader                    (echoes step and layer; its compute time)
//   worker -> coordinator  float outputs [n, hidden]      (same row order)
// This is an all-to-all-v written as point-to-point pairs, so a silent worker can be named; the
// NCCL exchange (issue 6) keeps the same order with grouped ncclSend/ncclRecv. Every wait polls with
// back-off instead of spinning, so idle ranks leave the cores to busy ones, and every wait on a
// worker has a deadline, so a dead or hung worker fails the step instead of hanging it.
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/exchange_telemetry.h"
#include "core/expert_exchange.h"
#include "core/expert_placement.h"

namespace moe {

enum class StepCommand : int32_t { kForward = 1, kShutdown = 2 };

struct StepHeader {
  uint32_t magic = 0;     // kStepMagic: a stray or misaligned message is caught at once
  int32_t command = 0;    // StepCommand
  int64_t step_id = 0;    // 1, 2, 3, ... one per exchange, never repeats
  int32_t layer = 0;
  int32_t n_experts = 0;
  int64_t n_rows = 0;     // rows for this worker
  int64_t hidden = 0;
  // Telemetry epoch (ResetLoad): workers zero their load counters when it changes, so resets fall
  // on the same step boundary on every rank. No telemetry data rides the data plane.
  uint32_t telemetry_epoch = 0;
  uint32_t reserved = 0;
};

struct ReplyHeader {
  uint32_t magic = 0;
  int32_t layer = 0;
  int64_t step_id = 0;
  int64_t n_rows = 0;
  double compute_seconds = 0;  // the worker's expert time for this step
};

// What one exchange cost, summed over exchanges since the last Reset().
struct ExchangeStats {
  int64_t exchanges = 0;
  double wall_seconds = 0;            // coordinator: from first send to last output received
  double slowest_compute_seconds = 0; // sum over exchanges of the slowest worker's expert time
  std::vector<double> worker_compute_seconds;  // [W + 1], by rank
  std::vector<int64_t> worker_rows;            // [W + 1], by rank
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  void Reset(int n_ranks);
};

struct MpiExchangeOptions {
  // A worker that has not answered a step for this long fails it. The time includes the
  // worker's expert computation, so it must exceed the longest step: generation prefills in
  // chunks (--prefill-chunk) to keep steps short; raise it for long one-shot logits dumps.
  double worker_timeout_seconds = 10.0;
  // Set by a signal handler: the next exchange fails with Cancelled (the one in flight finishes).
  const std::atomic<bool>* stop_requested = nullptr;
  // Telemetry, both optional: told about every exchange; the epoch stamped on step headers.
  ExchangeObserver* observer = nullptr;
  const std::atomic<uint32_t>* telemetry_epoch = nullptr;
};

// Coordinator side. Not thread-safe: the step loop's thread only, the one that called MPI_Init.
class MpiExchange : public ExpertExchange {
 public:
  MpiExchange(const ExpertPlacement* placement, MpiExchangeOptions options);
  absl::Status Exchange(const ExpertBatch& batch, std::vector<float>* out) override;
  // Tells every worker to exit its serving loop. Best effort; call once, at the end.
  void Shutdown();
  ExchangeStats& stats() { return stats_; }

 private:
  const ExpertPlacement* placement_;
  MpiExchangeOptions options_;
  int64_t step_id_ = 0;
  ExchangeStats stats_;
  // Per worker, reused across steps: rows packed for it, its expert ids, its outputs.
  std::vector<std::vector<float>> send_rows_;
  std::vector<std::vector<int32_t>> send_ids_;
  std::vector<std::vector<int64_t>> send_counts_;
  std::vector<std::vector<float>> recv_rows_;
  std::vector<ReplyHeader> replies_;
  std::vector<StepHeader> headers_;
  std::vector<double> step_compute_;  // [W + 1] this exchange's replies, for the observer
  std::vector<int64_t> step_rows_;
};

struct ExpertServeOptions {
  int rank = 0;                        // this worker's MPI rank
  const ExpertPlacement* placement = nullptr;
  int n_layers = 0;
  int64_t hidden = 0;
  // Set by a signal handler: the worker then waits at most `stop_grace_seconds` more for the
  // coordinator's shutdown before giving up on its own.
  const std::atomic<bool>* stop_requested = nullptr;
  // Long enough for the coordinator to finish a layer of attention and send the shutdown.
  double stop_grace_seconds = 30.0;
  // Told about every step answered (optional); the runner's per-expert times when it has them.
  WorkerStepObserver* observer = nullptr;
};

// Worker side: answers forward steps with `runner` until the coordinator says shutdown (OK) or
// something is wrong (an error naming the mismatch). Every message is checked against the header.
absl::Status ServeExperts(ExpertRunner* runner, const ExpertServeOptions& options);

}  // namespace moe
