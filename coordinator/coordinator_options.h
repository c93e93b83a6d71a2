// CoordinatorOptions: everything moe-coordinator is told on its command line, as one struct that
// is validated before MPI starts, so a bad flag is one line and no rank waits for a cluster that
// will never form.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "coordinator/inference/model_runner.h"
#include "coordinator/serve.h"
#include "core/exchange/transport_choice.h"
#include "core/model/weight_formats.h"
#include "kernels/backend.h"

namespace moe {

// What the coordinator does once the cluster is up.
enum class CoordinatorMode {
  kServe,       // gRPC until a signal (--listen)
  kLogits,      // dump logits of --tokens to --out, like moe-logits
  kGenerate,    // generate from --prompt, like moe-generate
  kBench,       // the benchmark through the cluster (--bench)
  kPerplexity,  // perplexity over --perplexity-file, like moe-perplexity
};

struct CoordinatorOptions {
  std::string model_dir;
  std::string placement_file;         // JSON placement; empty: contiguous blocks per worker
  int expert_slots = 0;               // most slots a worker hosts per layer, e.g. 4; 0: no limit
  kernels::DeviceOptions device;
  WeightFormats formats;  // --quantize; the workers must be given the same experts' format
  Transport exchange = Transport::kAuto;
  double worker_timeout_seconds = 10;
  // --overlap auto|on|off and --overlap-min-tokens: two micro-batches in ping-pong (ModelRunner).
  OverlapPolicy overlap;
  CoordinatorMode mode = CoordinatorMode::kServe;

  // Serving only.
  ServeOptions serve;                 // listen address, scheduler, limits, metrics, grace period
  int telemetry_interval_ms = 500;    // how often each worker reports its load (a heartbeat too)
  double load_window_seconds = 60;    // the sliding window of the windowed expert load
  std::string telemetry_address;      // where workers reach the coordinator; empty: derived
  // Live re-placement: the planner's budget is expert_slots (0: ceil(E / W), no replicas).
  double rebalance_interval_seconds = 0;  // check this often; 0: only on request (Rebalance RPC)
  double rebalance_threshold = 0.95;      // skip when worker balancedness is at least this

  // Says which flag is wrong, in the flag's spelling.
  absl::Status Validate() const;
};

// The address workers report telemetry to: --telemetry-address if given, else the listen host
// unless it is a wildcard (other hosts cannot dial it), then this host's name.
std::string WorkerTelemetryAddress(const CoordinatorOptions& options, int bound_port);

}  // namespace moe
