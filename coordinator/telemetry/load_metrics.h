// The load snapshot as Prometheus metrics. Cardinality stays at layers x experts (256 series for
// Mixtral-8x7B) for the largest family; per-worker families have one series per worker.
// Counters (*_total) count from start and never go down (LoadSnapshot::lifetime); ResetLoad starts
// afresh only the gauges that describe the load since it (balancedness, locality ratios, ...).
#pragma once

#include "coordinator/telemetry/prometheus_text.h"
#include "core/exchange/load_telemetry.h"

namespace moe {

void RenderLoadMetrics(const LoadSnapshot& snapshot, PrometheusText* out);

}  // namespace moe
