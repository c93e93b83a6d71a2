// The process collector every Prometheus client library exports (process_cpu_seconds_total,
// process_resident_memory_bytes, ...), read from /proc/self, and the build's info.
#pragma once

#include <string>

#include "coordinator/telemetry/prometheus_text.h"

namespace moe {

// version: the program's (moe_build_info{version="..."} 1).
void RenderProcessMetrics(const std::string& version, PrometheusText* out);

}  // namespace moe
