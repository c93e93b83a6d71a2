// ClientConnection: whether the client of an HTTP request has gone, so that a generation nobody
// will read is cancelled and its KV cache freed. cpp-httplib 0.11 (Debian 12's) does not hand a
// handler its socket (later versions have Request::is_connection_closed), so the socket is found
// by the connection's addresses among the process's descriptors.
#pragma once

#include <string>

namespace moe {

class ClientConnection {
 public:
  // The connection whose local and remote ends are these (as httplib's Request reports them,
  // numeric hosts). Not found (it cannot be told apart): Closed() is always false.
  static ClientConnection Find(const std::string& local_addr, int local_port, const std::string& remote_addr,
                               int remote_port);

  // True once the peer closed its side or the connection broke. Thread-safe; only meaningful
  // while the request is being served (the descriptor is the server's until then).
  bool Closed() const;
  bool found() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace moe
