// MetricsServer: serves GET /metrics in the Prometheus text format on its own port
// (--metrics-listen), on the hardened HttpServer's I/O thread. The page is rendered on each scrape.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/http/http_server.h"

namespace moe {

class MetricsServer {
 public:
  // listen: HOST:PORT (port 0 picks a free one); render: the page, called on the HTTP I/O thread.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);

  int port() const { return http_->port(); }

 private:
  MetricsServer() = default;
  std::unique_ptr<HttpServer> http_;
};

}  // namespace moe
