#include "coordinator/telemetry/server_metrics.h"

#include "coordinator/telemetry/load_metrics.h"
#include "coordinator/telemetry/process_metrics.h"

namespace moe {

void RenderSchedulerMetrics(const SchedulerStats& stats, PrometheusText* out) {
  // Counters since the server started: ResetLoad does not touch them.
  out->Family("moe_steps_total", "counter", "Forward steps (batches) since the server started.");
  out->Sample("moe_steps_total", static_cast<double>(stats.steps));
  out->Family("moe_tokens_total", "counter",
              "Tokens through the model (prompt and generated) since the server started.");
  out->Sample("moe_tokens_total", static_cast<double>(stats.tokens));
  out->Family("moe_requests_running", "gauge", "Requests in the running batch.");
  out->Sample("moe_requests_running", stats.running);
  out->Family("moe_requests_waiting", "gauge", "Requests waiting for admission.");
  out->Sample("moe_requests_waiting", stats.waiting);
  out->Family("moe_kv_cache_bytes", "gauge",
              "KV cache bytes reserved by running requests (state=used) and the budget.");
  out->Sample("moe_kv_cache_bytes", {{"state", "used"}}, static_cast<double>(stats.kv_bytes_used));
  out->Sample("moe_kv_cache_bytes", {{"state", "budget"}},
              static_cast<double>(stats.kv_bytes_budget));
  out->Family(
      "moe_overlapped_steps_total", "counter",
      "Forward steps run as two micro-batches in ping-pong (--overlap), since the server started.");
  out->Sample("moe_overlapped_steps_total", static_cast<double>(stats.split_steps));
}

std::string RenderServerMetrics(const SchedulerStats& stats, const RequestMetrics& requests,
                                const LoadSnapshot* load, const std::string& version) {
  PrometheusText page;
  RenderSchedulerMetrics(stats, &page);
  requests.Render(&page);
  if (load != nullptr) RenderLoadMetrics(*load, &page);
  RenderProcessMetrics(version, &page);
  return page.text();
}

}  // namespace moe
