// Fuzz target: a routing trace file (RoutingTrace::Parse, what moe-plan-placement --trace reads).
// Every field of every record it accepts (both versions) must be readable, and the counts must add
// up.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "coordinator/telemetry/routing_trace_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto trace =
      moe::RoutingTrace::Parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!trace.ok()) return 0;
  int64_t total = 0;
  for (const auto& layer : trace->ExpertCounts()) {
    for (int64_t c : layer) total += c;
  }
  if (total != trace->n_records() * trace->n_layers() * trace->top_k()) std::abort();
  for (int64_t i = 0; i < trace->n_records(); ++i) {
    trace->request_id(i);
    trace->step(i);
    trace->position(i);
    trace->token_id(i);
    trace->weight(i, trace->n_layers() - 1, trace->top_k() - 1);
    trace->entropy(i, trace->n_layers() - 1);  // NaN in version 1
    if (trace->version() == 1 && trace->flags(i) != 0) std::abort();  // version 1 has no flags
  }
  return 0;
}
