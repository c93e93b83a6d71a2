// RoutingTraceWriter: records every token's routing to a file (--routing-trace), in the compact
// fixed-record format of docs/routing-trace-format.md, for offline study with
// scripts/analyze_routing.py. A RoutingObserver: each step's records (about 350 bytes a token for
// Mixtral-8x7B) go out in one write to the page cache; serving never waits for the disk itself.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/routing_observer.h"
#include "core/config.h"
#include "core/expert_placement.h"

namespace moe {

class RoutingTraceWriter : public RoutingObserver {
 public:
  // Creates (truncates) path and writes the header. placement may be null (single process).
  static absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> Open(const std::string& path,
                                                                  const MixtralConfig& config,
                                                                  const ExpertPlacement* placement);
  ~RoutingTraceWriter() override;  // flushes and closes

  void OnForward(absl::Span<const RoutedToken> tokens, absl::Span<const Routing> routing) override;

  // Flushes and closes; the first write error since Open, if any (later steps are then dropped).
  absl::Status Close();
  int64_t records() const { return records_; }

  static constexpr uint32_t kVersion = 1;
  static size_t RecordBytes(int n_layers, int top_k);
  static size_t HeaderBytes(int n_layers, int n_experts);

 private:
  RoutingTraceWriter(std::FILE* file, std::string path, int n_layers, int top_k);
  void Fail(const char* what);

  std::FILE* file_;
  const std::string path_;
  const int n_layers_;
  const int top_k_;
  const size_t record_bytes_;
  const double start_;  // steady clock, seconds
  uint32_t step_ = 0;
  int64_t records_ = 0;
  absl::Status status_;
  std::vector<char> buffer_;  // one step's records
};

}  // namespace moe
