// RequestMetrics: what the serving front end counts for Prometheus: requests by outcome, tokens,
// and latency histograms (time to first token, total time, time per output token).
// Thread-safe: every gRPC handler records into it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/telemetry/prometheus_text.h"

namespace moe {

class LatencyHistogram {
 public:
  // Upper bounds in seconds, from 5 ms to 2 minutes: decode steps to long generations.
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1,     2.5,  5,     10,   30,  60,  120};
  void Observe(double seconds);
  // The _bucket (cumulative, with +Inf), _sum and _count samples.
  void Render(const char* name, PrometheusText* out) const;

 private:
  std::array<int64_t, kBounds.size() + 1> counts_{};  // last: above every bound
  double sum_ = 0;
  int64_t count_ = 0;
};

class RequestMetrics {
 public:
  // A request that streamed to the end. finish: "eos", "length" or "stop".
  void RecordFinished(const std::string& finish, int prompt_tokens, int generated_tokens,
                      double time_to_first_token_s, double total_s);
  // A request that ended with an error status (its gRPC code name, e.g. "INVALID_ARGUMENT").
  void RecordFailed(const std::string& code);

  void Render(PrometheusText* out) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> outcomes_ ABSL_GUARDED_BY(mu_);  // "eos", ..., "INVALID_ARGUMENT"
  int64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  LatencyHistogram ttft_ ABSL_GUARDED_BY(mu_);
  LatencyHistogram total_ ABSL_GUARDED_BY(mu_);
  LatencyHistogram per_token_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe
