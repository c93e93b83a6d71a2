// MetricsServer: serves GET /metrics in the Prometheus text format on its own port
// (--metrics-listen), from a thread of cpp-httplib's. The page is rendered on each scrape.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace moe {

class MetricsServer {
 public:
  // listen: HOST:PORT (port 0 picks a free one); render: the page, called on the HTTP threads.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);
  ~MetricsServer();  // stops serving and joins

  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> done_{false};  // the accept loop has returned
  int port_ = 0;
};

}  // namespace moe
