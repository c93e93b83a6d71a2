// Start-up of the cluster over MPI: every rank agrees on the expert placement, and rank 0 learns
// how each rank's loading went (memory, errors) before any step runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model_weights.h"
#include "core/placement/expert_placement.h"

namespace moe {

// Collective over MPI_COMM_WORLD. Rank 0 passes its placement (or the error that stopped it from
// making one); every rank returns rank 0's table, or rank 0's error.
absl::StatusOr<ExpertPlacement> SharePlacement(const absl::StatusOr<ExpertPlacement>* at_root);

struct RankReport {
  int32_t rank = 0;
  int32_t ok = 1;              // 0: this rank failed to start; error says why
  int32_t experts_hosted = 0;  // (layer, expert) pairs
  int64_t mapped_bytes = 0;    // weight bytes this rank uses
  int64_t resident_bytes = 0;  // VmRSS after loading
  double load_seconds = 0;
  int32_t cpu_numerics = 0;   // kernels::MatMulNumerics this rank multiplies with
  int32_t experts_dtype = 0;  // DType the experts are held as (the checkpoint's, --quantize)
  int64_t held_bytes = 0;     // weight bytes as held (quantized where asked), estimated
  char weights[96] = {};      // how this rank holds its weights, e.g. "experts INT4"
  char error[512] = {};
};

// This rank's report after loading: on success records the weights' bytes and the resident
// memory (a worker reports after its experts are uploaded, the coordinator before its runner
// uploads the attention side); on failure records the error.
RankReport ReportLoad(int rank, int experts_hosted,
                      const absl::StatusOr<std::unique_ptr<ModelWeights>>& weights,
                      double load_seconds, kernels::MatMulNumerics cpu_numerics);

// Rank 0's check of the reports: the first failed rank's error, or a rank whose CPU products or
// experts' format (--quantize) differ from the coordinator's (results would then depend on
// placement).
absl::Status CheckRankReports(const std::vector<RankReport>& reports);

// Collective over MPI_COMM_WORLD: rank 0 gets every rank's report (in rank order), others get {}.
std::vector<RankReport> GatherRankReports(const RankReport& mine);

// Where workers stream their load telemetry (the coordinator's gRPC server) and how often.
struct TelemetryEndpoint {
  std::string address;  // HOST:PORT, under 256 bytes; empty: no telemetry (one-shot modes)
  int32_t interval_ms = 500;
  // A secret the workers present with their reports: the report service shares the public gRPC
  // port, and MPI is the channel only cluster members hear. 32 hex digits.
  std::string token;
  // The PEM certificate the coordinator's port presents when it serves TLS (empty: plaintext).
  // Workers trust exactly this certificate, whatever names it carries: pinned, like the token,
  // through MPI.
  std::string server_certificate;
};

// The gRPC metadata key that carries the token on worker report streams (keys are lower case).
inline constexpr char kWorkerTokenHeader[] = "x-moe-worker-token";

// A fresh random token for TelemetryEndpoint::token.
std::string NewTelemetryToken();

// Collective over MPI_COMM_WORLD: every rank returns rank 0's endpoint. Non-root ranks wait for
// it with back-off (the coordinator starts its server first), however long that takes.
TelemetryEndpoint ShareTelemetryEndpoint(const TelemetryEndpoint& at_root);

// A table for start-up logs.
std::string FormatRankReports(const std::vector<RankReport>& reports);

}  // namespace moe
