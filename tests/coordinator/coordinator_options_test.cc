// CoordinatorOptions::Validate: every flag the coordinator checks, refused before MPI starts with
// the flag's own spelling; serving flags only matter when serving.
#include "coordinator/coordinator_options.h"

#include <string>

#include "gtest/gtest.h"

namespace moe {
namespace {

CoordinatorOptions Serving() {
  CoordinatorOptions o;
  o.model_dir = "models/demo";
  o.mode = CoordinatorMode::kServe;
  o.serve.listen = "127.0.0.1:0";
  return o;
}

std::string Refusal(const CoordinatorOptions& o) {
  const absl::Status s = o.Validate();
  return s.ok() ? "" : std::string(s.message());
}

TEST(CoordinatorOptionsTest, DefaultsAreValid) { EXPECT_EQ(Refusal(Serving()), ""); }

TEST(CoordinatorOptionsTest, NamesTheFlagThatIsWrong) {
  CoordinatorOptions o = Serving();
  o.model_dir.clear();
  EXPECT_EQ(Refusal(o), "--model is required");
  o = Serving();
  o.worker_timeout_seconds = 0;
  EXPECT_EQ(Refusal(o), "--worker-timeout-s must be > 0");
  o = Serving();
  o.expert_slots = -1;
  EXPECT_EQ(Refusal(o), "--expert-slots must be >= 0");
  o.expert_slots = 3;
  EXPECT_EQ(Refusal(o), "");
  o = Serving();
  o.telemetry_interval_ms = 5;
  EXPECT_EQ(Refusal(o), "--telemetry-interval-ms must be >= 10");
  o = Serving();
  o.load_window_seconds = -1;
  EXPECT_EQ(Refusal(o), "--load-window-s must be > 0");
  o = Serving();
  o.telemetry_address = std::string(201, 'h');
  EXPECT_EQ(Refusal(o), "--telemetry-address is longer than 200 characters");
  o = Serving();
  o.serve.scheduler.max_running = 0;
  EXPECT_EQ(Refusal(o), "--max-running must be >= 1");
  o = Serving();
  o.serve.scheduler.limits.max_tokens = 0;
  EXPECT_EQ(Refusal(o), "--max-tokens-limit must be >= 1");
  o = Serving();
  o.serve.shutdown_grace_seconds = -1;
  EXPECT_EQ(Refusal(o), "--shutdown-grace-s must be >= 0");
}

TEST(CoordinatorOptionsTest, ServingFlagsDoNotBindOneShotModes) {
  CoordinatorOptions o = Serving();
  o.mode = CoordinatorMode::kLogits;
  o.telemetry_interval_ms = 0;
  o.serve.scheduler.max_running = 0;
  EXPECT_EQ(Refusal(o), "");
  o.worker_timeout_seconds = 0;  // every mode exchanges with the workers
  EXPECT_EQ(Refusal(o), "--worker-timeout-s must be > 0");
  o.worker_timeout_seconds = 10;
  o.expert_slots = -2;  // every mode makes a placement
  EXPECT_EQ(Refusal(o), "--expert-slots must be >= 0");
}

TEST(CoordinatorOptionsTest, WorkersReachAWildcardListenerByHostName) {
  CoordinatorOptions o = Serving();
  o.serve.listen = "127.0.0.1:0";
  EXPECT_EQ(WorkerTelemetryAddress(o, 5123), "127.0.0.1:5123");
  o.serve.listen = "0.0.0.0:0";
  const std::string wildcard = WorkerTelemetryAddress(o, 5123);
  EXPECT_NE(wildcard.rfind("0.0.0.0", 0), 0u) << wildcard;
  EXPECT_EQ(wildcard.substr(wildcard.size() - 5), ":5123");
  o.telemetry_address = "gateway:7000";
  EXPECT_EQ(WorkerTelemetryAddress(o, 5123), "gateway:7000");
}

}  // namespace
}  // namespace moe
