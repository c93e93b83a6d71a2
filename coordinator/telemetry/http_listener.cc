#include "coordinator/telemetry/http_listener.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace moe {

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(std::unique_ptr<httplib::Server> server,
                                                                  const std::string& listen,
                                                                  const std::string& flag) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " wants HOST:PORT, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::unique_ptr<HttpListener> listener(new HttpListener());
  listener->server_ = std::move(server);
  listener->port_ = port == 0 ? listener->server_->bind_to_any_port(host)
                              : (listener->server_->bind_to_port(host, port) ? port : -1);
  if (listener->port_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", listen, " (", flag, ")"));
  }
  httplib::Server* raw = listener->server_.get();
  std::atomic<bool>* done = &listener->done_;
  listener->thread_ = std::thread([raw, done] {
    raw->listen_after_bind();
    *done = true;
  });
  return listener;
}

HttpListener::~HttpListener() {
  if (!thread_.joinable()) return;
  // stop() does nothing until the accept loop runs, so wait for it to run (or to have failed).
  while (!server_->is_running() && !done_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->stop();
  thread_.join();
}

}  // namespace moe
