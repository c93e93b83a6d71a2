// HttpListener: runs a configured cpp-httplib server on HOST:PORT from a thread of its own (its
// handlers on httplib's pool); the destructor stops it and joins. /metrics and the OpenAI API
// both run on one.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace moe {

class HttpListener {
 public:
  // listen: HOST:PORT, [V6]:PORT; port 0 picks a free one. flag: the flag that gave it, for errors.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(std::unique_ptr<httplib::Server> server,
                                                             const std::string& listen, const std::string& flag);
  ~HttpListener();  // stops accepting, lets handlers in flight return, joins

  int port() const { return port_; }

 private:
  HttpListener() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> done_{false};  // the accept loop has returned
  int port_ = 0;
};

}  // namespace moe
