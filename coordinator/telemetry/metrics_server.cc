#include "coordinator/telemetry/metrics_server.h"

#include "httplib.h"

namespace moe {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    std::function<std::string()> render) {
  auto http = std::make_unique<httplib::Server>();
  http->Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  absl::StatusOr<std::unique_ptr<HttpListener>> listener = HttpListener::Start(std::move(http), listen, "--metrics-listen");
  if (!listener.ok()) return listener.status();
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->listener_ = *std::move(listener);
  return server;
}

}  // namespace moe
