// RoutingTraceWriter: records every token's routing to a file (--routing-trace), in the compact
// fixed-record format of docs/routing-trace-format.md (version 2), for offline study with
// scripts/analyze_routing.py, and the sequences and steps beside it in FILE.events.jsonl. A
// RoutingObserver and an ExchangeObserver: each step's records (about 480 bytes a token for
// Mixtral-8x7B) go out in one write to the page cache, its event line in another; serving never
// waits for the disk itself.
//
// Thread-safety: none needed; every call comes from the engine thread (the step loop).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/inference/routing_observer.h"
#include "core/exchange/exchange_telemetry.h"
#include "core/model/config.h"
#include "core/placement/expert_placement.h"

namespace moe {

class RoutingTraceWriter : public RoutingObserver, public ExchangeObserver {
 public:
  // Creates (truncates) path and EventsPath(path) and writes the header. placement may be null
  // (single process).
  static absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> Open(const std::string& path,
                                                                  const MixtralConfig& config,
                                                                  const ExpertPlacement* placement);
  ~RoutingTraceWriter() override;  // flushes and closes

  void OnStepBegin() override;
  void OnForward(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) override;
  bool WantsRouterLogits() const override { return true; }  // each record's router entropy
  void OnSequenceStart(uint64_t sequence_id, const SequenceInfo& info) override;
  void OnSequenceEnd(uint64_t sequence_id) override;
  // Summed into the running step's event (exchange and per-worker seconds, straggler cost).
  void OnExchange(const ExchangeRecord& record) override;

  // Flushes and closes both files; the first write error since Open, if any (later steps are then
  // dropped).
  absl::Status Close();
  int64_t records() const { return records_; }

  static constexpr uint32_t kVersion = 2;
  static size_t RecordBytes(int n_layers, int top_k);
  static size_t HeaderBytes(int n_layers, int n_experts);
  // Where the events of the trace at trace_path go: trace_path + ".events.jsonl".
  static std::string EventsPath(const std::string& trace_path);
  // Entropy in nats of softmax(logits[0..n)), computed in double: log(sum exp(x - m)) -
  // sum p (x - m), exact for any shift m, so large logits neither overflow nor lose the result.
  static double RouterEntropy(const float* logits, int n);

 private:
  RoutingTraceWriter(std::FILE* file, std::FILE* events, std::string path, const MixtralConfig& c,
                     int n_workers);
  void Fail(const char* what);
  void WriteEvent(const std::string& line);
  double Elapsed() const;  // seconds since start_

  std::FILE* file_;
  std::FILE* events_;
  const std::string path_;
  const int n_layers_;
  const int n_experts_;
  const int top_k_;
  const int n_workers_;  // 0: a single process
  const size_t record_bytes_;
  const double start_;  // steady clock, seconds
  uint32_t step_ = 0;
  int64_t records_ = 0;
  absl::Status status_;
  std::vector<char> buffer_;  // one step's records
  // The running step's exchanges, summed over its layers (reset by OnStepBegin).
  double step_exchange_seconds_ = 0;
  double step_straggler_seconds_ = 0;
  std::vector<double> step_worker_seconds_;  // [W + 1] by rank (0 unused)
  std::vector<int64_t> step_worker_rows_;    // [W + 1] by rank (0 unused)
};

}  // namespace moe
