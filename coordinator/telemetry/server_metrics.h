// The coordinator's whole Prometheus page, served at /metrics of the API port and on
// --metrics-listen's: the engine's steps and queue, the requests' histograms, the load (when
// telemetry is on) and the process collector.
#pragma once

#include <string>

#include "coordinator/inference/scheduler.h"
#include "coordinator/telemetry/prometheus_text.h"
#include "coordinator/telemetry/request_metrics.h"
#include "core/exchange/load_telemetry.h"

namespace moe {

// The engine's families: steps and tokens since start (counters), the batch, the queue and the KV
// cache now (gauges).
void RenderSchedulerMetrics(const SchedulerStats& stats, PrometheusText* out);

// load: null when the load telemetry is off. version: moe_build_info's.
std::string RenderServerMetrics(const SchedulerStats& stats, const RequestMetrics& requests,
                                const LoadSnapshot* load, const std::string& version);

}  // namespace moe
