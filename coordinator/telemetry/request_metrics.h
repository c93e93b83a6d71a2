// RequestMetrics: what the serving front end counts for Prometheus: requests by outcome, tokens,
// and histograms as vLLM's (time to first token, queue, prefill, decode and total time, time per
// output token, inter-token latency, prompt and generation lengths).
// Thread-safe: every gRPC and HTTP handler records into it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "coordinator/telemetry/prometheus_text.h"

namespace moe {

// Upper bounds: seconds from 1 ms (a decode step of a small model) to 2 minutes; token counts.
inline constexpr double kSecondsBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,      2.5,   5,    10,    30,   60,  120};
inline constexpr double kTokenBounds[] = {1,   2,   5,    10,   20,   50,    100,
                                          200, 500, 1000, 2000, 5000, 10000, 20000};

class Histogram {
 public:
  explicit Histogram(absl::Span<const double> bounds)
      : bounds_(bounds), counts_(bounds.size() + 1, 0) {}
  void Observe(double value);
  // The _bucket (cumulative, with +Inf), _sum and _count samples.
  void Render(const char* name, PrometheusText* out) const;

 private:
  absl::Span<const double> bounds_;
  std::vector<int64_t> counts_;  // last: above every bound
  double sum_ = 0;
  int64_t count_ = 0;
};

class RequestMetrics {
 public:
  // A request that streamed to the end. finish: "eos", "length" or "stop"; times from its arrival
  // (queue_s: to its admission into the batch, < 0 when unknown).
  void RecordFinished(const std::string& finish, int prompt_tokens, int generated_tokens,
                      double time_to_first_token_s, double total_s, double queue_s = -1);
  // The time between two consecutive tokens of one sequence, as they were sampled.
  void RecordInterToken(double seconds);
  // A request that ended with an error status (its gRPC code name, e.g. "INVALID_ARGUMENT").
  void RecordFailed(const std::string& code);

  void Render(PrometheusText* out) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> outcomes_ ABSL_GUARDED_BY(mu_);  // "eos", ..., "INVALID_ARGUMENT"
  int64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram ttft_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram total_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram per_token_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram inter_token_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram queue_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram prefill_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram decode_ ABSL_GUARDED_BY(mu_){kSecondsBounds};
  Histogram prompt_length_ ABSL_GUARDED_BY(mu_){kTokenBounds};
  Histogram generation_length_ ABSL_GUARDED_BY(mu_){kTokenBounds};
};

}  // namespace moe
