// HttpServer: the coordinator's HTTP/1.1 ports (the OpenAI API, /metrics) on Boost.Beast, built to
// hold against hostile clients by construction rather than by patches:
//
// - reading is asynchronous on one I/O thread: a slow or silent client costs a socket, never a
//   thread, so /health and the API keep answering whatever the other connections do;
// - deadlines are totals, not idle timers: the head must be complete `head_timeout` after the
//   server starts waiting for it (keep-alive idle time included), the body `request_timeout` after;
//   trickling a byte at a time cannot extend either;
// - connection caps, overall and per client address, refuse at accept time (close, nothing read);
//   a listen backlog of 1024;
// - strict framing (Beast's parser): conflicting lengths, Transfer-Encoding with Content-Length, a
//   bad chunk size are 400; a POST without a length is 411; a coded body (Content-Encoding) is 415
//   before any of it is read (nothing is ever inflated); the body limit counts decoded chunked
//   bytes (413); the head is limited too (431); pipelined requests are answered in order;
// - routes that block (a generation) run on a bounded pool of handler threads and stream through
//   HttpExchange, each write with its own deadline; only complete requests reach the pool, and
//   those beyond its threads wait in a queue that holds no thread. Quick routes (/health) run on
//   the I/O thread and so answer while the pool is saturated.
// - HTTP/1.0 clients get no chunked encoding: a stream is sent raw and the connection closed.
//
// Thread-safety: Start/destructor from one thread; handlers as described above.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace moe {

struct HttpRequest {
  std::string method;  // "GET", "POST"
  std::string path;    // the target without its query
  int version = 11;    // 10 or 11
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string remote_address;  // numeric

  std::string Header(absl::string_view name) const;  // case-insensitive; "" when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// One request's answer, from the handler: whole (Respond) or streamed (StartStream, Write...,
// EndStream). Used only by the handler it was given to, only until the handler returns.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void Respond(HttpResponse response) = 0;
  // Streams: a chunked body to HTTP/1.1 clients, a raw one (then close) to HTTP/1.0. Each call
  // blocks until written; false when the client is gone, too slow (the write deadline), or the
  // server stops: the handler should give up. Only on routes that run on the handler pool.
  virtual bool StartStream(int status, const std::string& content_type,
                           const std::vector<std::pair<std::string, std::string>>& headers) = 0;
  virtual bool Write(absl::string_view data) = 0;
  virtual void EndStream() = 0;
  // True once the client closed its side or the server stops (a poll, cheap; thread-safe).
  virtual bool ClientGone() const = 0;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpExchange&)>;

struct HttpRoute {
  std::string method;
  std::string path;       // exact, or a prefix when it ends in '/'
  bool blocks = false;    // runs on the handler pool (may wait, may stream); else on the I/O thread
  bool has_body = false;  // POST with a JSON body: a length is required (411 without)
  HttpHandler handler;
};

struct HttpServerOptions {
  std::string listen;                    // HOST:PORT, [V6]:PORT; port 0 picks a free one
  std::string flag;                      // the flag that gave `listen`, for errors
  int max_connections = 1024;            // open at once; more are closed at accept
  int max_connections_per_client = 128;  // open at once from one address
  int handler_threads = 128;             // blocking routes served at once; more wait their turn
  uint64_t max_body_bytes = 1 << 20;     // decoded; more is 413
  uint32_t max_head_bytes = 32 << 10;    // request line and headers; more is 431
  absl::Duration head_timeout = absl::Seconds(10);     // waiting for a request until its head is in
  absl::Duration request_timeout = absl::Seconds(30);  // waiting for a request until its body is in
  absl::Duration write_timeout = absl::Seconds(30);    // each write of a response
  int backlog = 1024;
  // HTTPS when set (PEM files); a client CA asks every client for a certificate it signed.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Runs on the I/O thread once a head is in, before its body is read: a response refuses the
  // request (401 without the API key) and the body is never read. May be empty.
  std::function<std::optional<HttpResponse>(const HttpRequest& head)> check_head;
  // The body of an error the server answers by itself (404, 413, ...); default plain text.
  std::function<std::string(int status, const std::string& message)> error_body;
  std::string error_content_type = "text/plain; charset=utf-8";
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           std::vector<HttpRoute> routes);
  // Stops accepting, tells handlers in flight that their clients are gone (ClientGone, Write
  // false), waits for them to return, closes every connection.
  ~HttpServer();

  int port() const;
  bool https() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe
