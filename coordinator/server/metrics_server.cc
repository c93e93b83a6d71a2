#include "coordinator/server/metrics_server.h"

#include <utility>

namespace moe {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::function<std::string()> render) {
  HttpServerOptions options;
  options.listen = listen;
  options.flag = "--metrics-listen";
  options.handler_threads = 1;  // /metrics renders on the I/O thread: nothing blocks
  options.max_body_bytes = 0;
  std::vector<HttpRoute> routes;
  routes.push_back({"GET", "/metrics", false, false,
                    [render = std::move(render)](const HttpRequest&, HttpExchange& ex) {
                      ex.Respond({200, "text/plain; version=0.0.4; charset=utf-8", render(), {}});
                    }});
  absl::StatusOr<std::unique_ptr<HttpServer>> http =
      HttpServer::Start(std::move(options), std::move(routes));
  if (!http.ok()) return http.status();
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->http_ = *std::move(http);
  return server;
}

}  // namespace moe
