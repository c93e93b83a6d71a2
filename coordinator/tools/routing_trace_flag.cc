// --routing-trace, for every program that runs the forward pass.
#include "absl/flags/flag.h"
#include "coordinator/tools/modes.h"

ABSL_FLAG(std::string, routing_trace, "",
          "record every token's routing (request, position, token, experts, weights and router "
          "entropy per layer) into this file, and the requests and steps into FILE.events.jsonl; "
          "see docs/routing-trace-format.md and scripts/analyze_routing.py");

namespace moe::cli {

absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> OpenRoutingTrace(
    ModelRunner* runner, const ExpertPlacement* placement, ExchangeObservers* exchange_observers) {
  const std::string path = absl::GetFlag(FLAGS_routing_trace);
  if (path.empty()) return nullptr;
  absl::StatusOr<std::unique_ptr<RoutingTraceWriter>> writer =
      RoutingTraceWriter::Open(path, runner->config(), placement);
  if (writer.ok()) {
    runner->AddRoutingObserver(writer->get());
    if (exchange_observers != nullptr) exchange_observers->Add(writer->get());
  }
  return writer;
}

}  // namespace moe::cli
