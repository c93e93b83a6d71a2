#include "coordinator/telemetry/metrics_server.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace moe {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::function<std::string()> render) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen wants HOST:PORT, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->server_ = std::make_unique<httplib::Server>();
  server->server_->Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server->port_ = port == 0 ? server->server_->bind_to_any_port(host)
                            : (server->server_->bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", listen, " for /metrics"));
  }
  httplib::Server* raw = server->server_.get();
  std::atomic<bool>* done = &server->done_;
  server->thread_ = std::thread([raw, done] {
    raw->listen_after_bind();
    *done = true;
  });
  return server;
}

MetricsServer::~MetricsServer() {
  if (!thread_.joinable()) return;
  // stop() does nothing until the accept loop runs, so wait for it to run (or to have failed).
  while (!server_->is_running() && !done_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->stop();
  thread_.join();
}

}  // namespace moe
