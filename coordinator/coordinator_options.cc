#include "coordinator/coordinator_options.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status CoordinatorOptions::Validate() const {
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (!(worker_timeout_seconds > 0)) return absl::InvalidArgumentError("--worker-timeout-s must be > 0");
  if (expert_slots < 0) return absl::InvalidArgumentError("--expert-slots must be >= 0");
  if (overlap.min_tokens < 2) return absl::InvalidArgumentError("--overlap-min-tokens must be >= 2");
  if (mode != CoordinatorMode::kServe) return absl::OkStatus();
  if (absl::Status s = serve.Validate(); !s.ok()) return s;
  if (!(serve.shutdown_grace_seconds >= 0)) {
    return absl::InvalidArgumentError("--shutdown-grace-s must be >= 0");
  }
  if (telemetry_interval_ms < 10) return absl::InvalidArgumentError("--telemetry-interval-ms must be >= 10");
  if (!(load_window_seconds > 0)) return absl::InvalidArgumentError("--load-window-s must be > 0");
  if (!(rebalance_interval_seconds >= 0) || rebalance_interval_seconds > 1e7) {
    return absl::InvalidArgumentError("--rebalance-interval-s must be >= 0 (0: only on request)");
  }
  if (!(rebalance_threshold > 0 && rebalance_threshold <= 1)) {
    return absl::InvalidArgumentError("--rebalance-threshold must be in (0, 1]");
  }
  // It travels to the workers in a fixed-size message.
  if (telemetry_address.size() > 200) {
    return absl::InvalidArgumentError("--telemetry-address is longer than 200 characters");
  }
  return absl::OkStatus();
}

std::string WorkerTelemetryAddress(const CoordinatorOptions& options, int bound_port) {
  if (!options.telemetry_address.empty()) return options.telemetry_address;
  const std::string& listen = options.serve.listen;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    host = gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  return absl::StrCat(host, ":", bound_port);
}

}  // namespace moe
