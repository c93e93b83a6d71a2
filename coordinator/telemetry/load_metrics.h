// The load snapshot as Prometheus metrics. Cardinality stays at layers x experts (256 series for
// Mixtral-8x7B) for the largest family; per-worker families have one series per worker.
// Counters restart from zero after ResetLoad, which Prometheus' rate() treats as a counter reset.
#pragma once

#include "coordinator/telemetry/prometheus_text.h"
#include "core/load_telemetry.h"

namespace moe {

void RenderLoadMetrics(const LoadSnapshot& snapshot, PrometheusText* out);

}  // namespace moe
