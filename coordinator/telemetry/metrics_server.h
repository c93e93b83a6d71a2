// MetricsServer: serves GET /metrics in the Prometheus text format on its own port
// (--metrics-listen), from a thread of cpp-httplib's. The page is rendered on each scrape.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/telemetry/http_listener.h"

namespace moe {

class MetricsServer {
 public:
  // listen: HOST:PORT (port 0 picks a free one); render: the page, called on the HTTP threads.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);

  int port() const { return listener_->port(); }

 private:
  MetricsServer() = default;
  std::unique_ptr<HttpListener> listener_;
};

}  // namespace moe
