// RoutingTrace: a routing trace read back (docs/routing-trace-format.md, versions 1 and 2),
// checked as scripts/routing_trace.py checks it: the magic and version, the sizes the header's
// shape implies, placement ranks within 1..W, expert ids within 0..E-1 and finite times in every
// record. A trailing partial record (a writer cut short) is dropped, not an error. A version-1
// trace reads as version 2 without its additions: flags 0, entropy NaN. moe-plan-placement
// --trace reads loads from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

class RoutingTrace {
 public:
  // Reads and checks a whole trace file; InvalidArgument naming the file and the first fault.
  static absl::StatusOr<RoutingTrace> Open(const std::string& path);
  // The same checks on bytes in memory; `name` prefixes the errors.
  static absl::StatusOr<RoutingTrace> Parse(std::string bytes, const std::string& name);

  int version() const { return version_; }  // 1 or 2
  int n_layers() const { return n_layers_; }
  int n_experts() const { return n_experts_; }
  int top_k() const { return top_k_; }
  int n_workers() const { return n_workers_; }       // 0: written by a single process
  double start_time() const { return start_time_; }  // Unix seconds
  int64_t n_records() const { return n_records_; }
  int64_t dropped_bytes() const { return dropped_bytes_; }
  // The start-up placement's rank hosting (layer, expert); 0 in a single process.
  int placement(int layer, int expert) const;

  // Record i's fields (REQUIRES: 0 <= i < n_records()).
  uint64_t request_id(int64_t i) const;
  double time(int64_t i) const;  // seconds since start_time()
  uint32_t step(int64_t i) const;
  int32_t position(int64_t i) const;
  int32_t token_id(int64_t i) const;
  int expert(int64_t i, int layer, int choice) const;    // by falling router weight
  float weight(int64_t i, int layer, int choice) const;  // renormalised
  uint8_t flags(int64_t i) const;                        // 0 in version 1
  bool prefill(int64_t i) const { return (flags(i) & 1) != 0; }  // a prompt token
  float entropy(int64_t i, int layer) const;  // router entropy, nats; NaN in version 1

  // [layer][expert] token-choices: each record adds its k choices per layer.
  std::vector<std::vector<int64_t>> ExpertCounts() const;

 private:
  RoutingTrace() = default;
  const char* record(int64_t i) const;

  std::string bytes_;
  int version_ = 0, n_layers_ = 0, n_experts_ = 0, top_k_ = 0, n_workers_ = 0;
  double start_time_ = 0;
  size_t header_bytes_ = 0, record_bytes_ = 0, weights_offset_ = 0, entropy_offset_ = 0;
  int64_t n_records_ = 0, dropped_bytes_ = 0;
};

}  // namespace moe
