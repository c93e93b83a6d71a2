#include "coordinator/http/http_server.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moe {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::string HttpRequest::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return value;
  }
  return "";
}

namespace {

Clock::duration ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

// Threads for the routes that block, started as they are first needed, at most `limit`. A request
// beyond them waits its turn in the queue (it holds no thread; the connection caps bound the
// queue, one request per connection).
class HandlerPool {
 public:
  explicit HandlerPool(int limit) : limit_(limit) {}
  ~HandlerPool() { Join(); }

  bool Submit(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    tasks_.push_back(std::move(task));
    if (idle_ < static_cast<int>(tasks_.size()) && threads_.size() < static_cast<size_t>(limit_)) {
      threads_.emplace_back([this] { Run(); });
    }
    ready_.notify_one();
    return true;
  }

  // Waits for the tasks in flight, then ends the threads.
  void Join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      ready_.notify_all();
    }
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      ready_.wait(lock, [this] { return !tasks_.empty() || stopping_; });
      --idle_;
      if (tasks_.empty()) return;
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // its captures go before the thread takes the next one
      lock.lock();
    }
  }

  const int limit_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  int idle_ = 0;
  bool stopping_ = false;
};

}  // namespace

// What the server keeps of every connection, for the caps and for stopping.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Abort() = 0;  // I/O thread: stop (see HttpServer's destructor)
};

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, std::vector<HttpRoute> routes)
      : options(std::move(options)),
        routes(std::move(routes)),
        pool(this->options.handler_threads) {}

  absl::Status Listen();
  void Stop();

  const HttpRoute* Find(const std::string& path, const std::string& method,
                        bool* path_known) const {
    *path_known = false;
    for (const HttpRoute& r : routes) {
      const bool match =
          r.path == path ||
          (r.path.back() == '/' && absl::StartsWith(path, r.path) && path.size() > r.path.size());
      if (!match) continue;
      *path_known = true;
      if (r.method == method) return &r;
    }
    return nullptr;
  }

  std::string ErrorBody(int status, const std::string& message) const {
    return options.error_body ? options.error_body(status, message) : message + "\n";
  }

  // Connection accounting (sessions end on the I/O thread or, at the very end, in Stop()).
  bool Admit(const std::string& client) {
    std::lock_guard<std::mutex> lock(mu);
    int& mine = per_client[client];
    if (open >= options.max_connections || mine >= options.max_connections_per_client) {
      if (mine == 0) per_client.erase(client);
      return false;
    }
    ++open;
    ++mine;
    return true;
  }
  void Register(SessionBase* s) {
    std::lock_guard<std::mutex> lock(mu);
    sessions.insert(s);
  }
  void Leave(SessionBase* s, const std::string& client) {
    std::lock_guard<std::mutex> lock(mu);
    sessions.erase(s);
    --open;
    if (--per_client[client] <= 0) per_client.erase(client);
  }

  void Accept();

  // Declared before the I/O context: sessions it still holds at destruction leave through these.
  const HttpServerOptions options;
  const std::vector<HttpRoute> routes;
  std::atomic<bool> stopping{false};
  int port = 0;
  std::mutex mu;
  int open = 0;
  std::map<std::string, int> per_client;
  std::set<SessionBase*> sessions;
  std::optional<ssl::context> tls;
  HandlerPool pool;

  net::io_context io{1};
  tcp::acceptor acceptor{io};
  net::steady_timer retry_accept{io};
  std::thread io_thread;
};

namespace {

template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(HttpServer::Impl* server, Stream stream, std::string client)
      : server_(server), stream_(std::move(stream)), client_(std::move(client)) {
    fd_ = beast::get_lowest_layer(stream_).socket().native_handle();
    server_->Register(this);
  }
  ~Session() override { server_->Leave(this, client_); }

  void Start() {
    request_started_ = Clock::now();
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      ReadHead();
    } else {
      beast::get_lowest_layer(stream_).expires_at(request_started_ +
                                                  ToChrono(server_->options.head_timeout));
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close();
                                self->ReadHead();
                              });
    }
  }

  void Abort() override {
    closing_ = true;
    // A handler in flight still uses the socket's descriptor (ClientGone polls it): cancel its
    // writes, and let the session close once the handler has returned.
    if (handler_running_) {
      beast::get_lowest_layer(stream_).cancel();
    } else {
      Close();
    }
  }

  // --- called from a handler thread through the exchange ---

  // Runs `op` on the I/O thread and waits for its completion (the write deadline bounds it).
  bool RunOnIo(std::function<void(std::function<void(beast::error_code)>)> op) {
    if (closing_ || server_->stopping) return false;
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      beast::error_code ec;
    };
    auto wait = std::make_shared<Wait>();
    net::post(server_->io, [self = this->shared_from_this(), op = std::move(op), wait] {
      if (self->closing_) {
        std::lock_guard<std::mutex> lock(wait->mu);
        wait->done = true;
        wait->ec = net::error::operation_aborted;
        wait->cv.notify_one();
        return;
      }
      beast::get_lowest_layer(self->stream_)
          .expires_after(ToChrono(self->server_->options.write_timeout));
      op([wait](beast::error_code ec) {
        std::lock_guard<std::mutex> lock(wait->mu);
        wait->done = true;
        wait->ec = ec;
        wait->cv.notify_one();
      });
    });
    std::unique_lock<std::mutex> lock(wait->mu);
    wait->cv.wait(lock, [&] { return wait->done; });
    if (wait->ec) stream_failed_ = true;
    return !wait->ec;
  }

  bool ClientGone() const {
    if (closing_ || stream_failed_ || server_->stopping) return true;
    pollfd p{fd_, POLLRDHUP, 0};
    if (poll(&p, 1, 0) != 1) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
  }

  Stream& stream() { return stream_; }
  int version() const { return request_.version; }
  bool keep_alive() const { return keep_alive_; }

 private:
  class Exchange;

  void ReadHead() {
    if (closing_) return Close();
    parser_.emplace();
    parser_->header_limit(server_->options.max_head_bytes);
    parser_->body_limit(server_->options.max_body_bytes);
    // The deadline runs from when the server starts waiting, idle keep-alive time included.
    request_started_ = Clock::now();
    beast::get_lowest_layer(stream_).expires_at(request_started_ +
                                                ToChrono(server_->options.head_timeout));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnHead(ec); });
  }

  void OnHead(beast::error_code ec) {
    if (ec == http::error::header_limit) return Fail(431, "the request head is too large");
    if (ec == http::error::body_limit) return Fail(413, "the request body is too large");
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset) {
      return Close();
    }
    if (ec) return Fail(400, absl::StrCat("malformed request: ", ec.message()));
    const auto& head = parser_->get();
    request_ = HttpRequest{};
    request_.method = std::string(head.method_string());
    const absl::string_view target(head.target().data(), head.target().size());
    request_.path = std::string(target.substr(0, target.find('?')));
    request_.version = head.version();
    request_.remote_address = client_;
    for (const auto& field : head) {
      request_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    if (request_.version != 10 && request_.version != 11)
      return Fail(505, "only HTTP/1.0 and HTTP/1.1 are served");

    // Nothing is ever inflated: a coded body is refused before a byte of it is read.
    const std::string coding =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(request_.Header("Content-Encoding")));
    if (!coding.empty() && coding != "identity") {
      return Fail(415, absl::StrCat("Content-Encoding \"", coding,
                                    "\" is not accepted: send the body uncompressed"));
    }
    if (head.count(http::field::transfer_encoding) > 0 && !parser_->chunked()) {
      return Fail(400, "Transfer-Encoding other than chunked is not accepted");
    }
    bool path_known = false;
    route_ = server_->Find(request_.path, request_.method, &path_known);
    if (route_ == nullptr) {
      return path_known ? Fail(405, absl::StrCat("method ", request_.method, " is not allowed on ",
                                                 request_.path))
                        : Fail(404, absl::StrCat("no such endpoint: ", request_.method, " ",
                                                 request_.path));
    }
    const auto length = parser_->content_length();
    if (route_->has_body && !length.has_value() && !parser_->chunked()) {
      return Fail(411, "a request body needs Content-Length or chunked Transfer-Encoding");
    }
    if (length.has_value() && *length > server_->options.max_body_bytes) {
      return Fail(413, "the request body is too large");
    }
    if (server_->options.check_head) {
      if (std::optional<HttpResponse> refused = server_->options.check_head(request_);
          refused.has_value()) {
        keep_alive_ = false;
        return WriteWhole(std::move(*refused));
      }
    }
    beast::get_lowest_layer(stream_).expires_at(request_started_ +
                                                ToChrono(server_->options.request_timeout));
    if (absl::EqualsIgnoreCase(request_.Header("Expect"), "100-continue") &&
        request_.version == 11) {
      auto self = this->shared_from_this();
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      return net::async_write(stream_, net::buffer(*cont),
                              [self, cont](beast::error_code ec, size_t) {
                                if (ec) return self->Close();
                                self->ReadBody();
                              });
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (ec == http::error::body_limit) return Fail(413, "the request body is too large");
    if (ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::eof || ec == http::error::end_of_stream ||
        ec == http::error::partial_message || ec == net::error::connection_reset) {
      return Close();
    }
    if (ec) return Fail(400, absl::StrCat("malformed request: ", ec.message()));
    keep_alive_ = parser_->get().keep_alive();
    request_.body = std::move(parser_->get().body());
    parser_.reset();
    beast::get_lowest_layer(stream_).expires_never();
    Dispatch();
  }

  void Dispatch();
  void OnHandlerDone(std::optional<HttpResponse> whole, bool streamed, bool stream_ended);

  void Fail(int status, const std::string& message) {
    keep_alive_ = false;  // the rest of what this client sent is not read
    HttpResponse r;
    r.status = status;
    r.content_type = server_->options.error_content_type;
    r.body = server_->ErrorBody(status, message);
    WriteWhole(std::move(r));
  }

  void WriteWhole(HttpResponse r) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<unsigned>(r.status));
    res->version(request_.version == 10 ? 10 : 11);
    res->set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->body() = std::move(r.body);
    res->keep_alive(keep_alive_ && !closing_);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(ToChrono(server_->options.write_timeout));
    http::async_write(stream_, *res,
                      [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
                        if (ec || !res->keep_alive()) return self->Close();
                        self->ReadHead();
                      });
  }

  void Close() {
    closing_ = true;
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  HttpServer::Impl* const server_;
  Stream stream_;
  const std::string client_;
  int fd_ = -1;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;
  const HttpRoute* route_ = nullptr;
  bool keep_alive_ = false;
  Clock::time_point request_started_;
  std::atomic<bool> closing_{false};
  std::atomic<bool> handler_running_{false};
  std::atomic<bool> stream_failed_{false};
};

// The handler's side of one request. On the I/O thread (routes that do not block) only Respond
// works; on the pool every call but Respond goes through the I/O thread and waits.
template <class Stream>
class Session<Stream>::Exchange : public HttpExchange {
 public:
  Exchange(Session* session, bool on_pool) : s_(session), on_pool_(on_pool) {}

  void Respond(HttpResponse response) override {
    if (!streamed_) whole_ = std::move(response);
  }

  bool StartStream(int status, const std::string& content_type,
                   const std::vector<std::pair<std::string, std::string>>& headers) override {
    if (!on_pool_ || streamed_ || whole_.has_value()) return false;
    streamed_ = true;
    chunked_ = s_->version() == 11;
    head_ = std::make_shared<http::response<http::empty_body>>();
    head_->result(static_cast<unsigned>(status));
    head_->version(chunked_ ? 11 : 10);
    head_->set(http::field::content_type, content_type);
    for (const auto& [k, v] : headers) head_->set(k, v);
    // HTTP/1.0 has no chunks: the body runs until the connection closes.
    head_->keep_alive(chunked_ && s_->keep_alive());
    head_->chunked(chunked_);
    serializer_ = std::make_shared<http::response_serializer<http::empty_body>>(*head_);
    ok_ = s_->RunOnIo([this](std::function<void(beast::error_code)> done) {
      http::async_write_header(s_->stream(), *serializer_,
                               [done](beast::error_code ec, size_t) { done(ec); });
    });
    return ok_;
  }

  bool Write(absl::string_view data) override {
    if (!streamed_ || ended_ || !ok_) return false;
    if (data.empty()) return true;
    ok_ = s_->RunOnIo([this, data](std::function<void(beast::error_code)> done) {
      auto write = [done](beast::error_code ec, size_t) { done(ec); };
      if (chunked_) {
        net::async_write(s_->stream(), http::make_chunk(net::buffer(data.data(), data.size())),
                         write);
      } else {
        net::async_write(s_->stream(), net::buffer(data.data(), data.size()), write);
      }
    });
    return ok_;
  }

  void EndStream() override {
    if (!streamed_ || ended_) return;
    ended_ = true;
    if (ok_ && chunked_) {
      ok_ = s_->RunOnIo([this](std::function<void(beast::error_code)> done) {
        net::async_write(s_->stream(), http::make_chunk_last(),
                         [done](beast::error_code ec, size_t) { done(ec); });
      });
    }
  }

  bool ClientGone() const override { return s_->ClientGone(); }

  std::optional<HttpResponse> whole_;
  bool streamed_ = false;
  bool ended_ = false;
  bool ok_ = true;

 private:
  Session* const s_;
  const bool on_pool_;
  bool chunked_ = true;
  std::shared_ptr<http::response<http::empty_body>> head_;
  std::shared_ptr<http::response_serializer<http::empty_body>> serializer_;
};

template <class Stream>
void Session<Stream>::Dispatch() {
  const HttpRoute* route = route_;
  if (!route->blocks) {
    Exchange exchange(this, /*on_pool=*/false);
    route->handler(request_, exchange);
    return OnHandlerDone(std::move(exchange.whole_), false, false);
  }
  handler_running_ = true;
  auto self = this->shared_from_this();
  const bool submitted = server_->pool.Submit([self, route]() mutable {
    Exchange exchange(self.get(), /*on_pool=*/true);
    route->handler(self->request_, exchange);
    if (exchange.streamed_) exchange.EndStream();
    const bool ended = exchange.streamed_ && exchange.ok_;
    // The reference moves to the I/O thread: a session always ends there, never on the pool.
    HttpServer::Impl* server = self->server_;
    net::post(server->io, [self = std::move(self), whole = std::move(exchange.whole_),
                           streamed = exchange.streamed_, ended]() mutable {
      self->OnHandlerDone(std::move(whole), streamed, ended);
    });
  });
  if (!submitted) {
    handler_running_ = false;
    Fail(503, "the server is shutting down");
  }
}

template <class Stream>
void Session<Stream>::OnHandlerDone(std::optional<HttpResponse> whole, bool streamed,
                                    bool stream_ended) {
  handler_running_ = false;
  request_.body.clear();
  request_.body.shrink_to_fit();
  if (closing_) return Close();
  if (streamed) {
    if (stream_ended && request_.version == 11 && keep_alive_) return ReadHead();
    return Close();
  }
  if (!whole.has_value()) {
    keep_alive_ = false;
    whole = HttpResponse{
        500, server_->options.error_content_type, server_->ErrorBody(500, "no response"), {}};
  }
  WriteWhole(std::move(*whole));
}

// Refused at accept: nothing is read. On the plain port the client is told why, in one send that
// never waits.
void RefuseConnection(tcp::socket& socket, bool plain, const std::string& body) {
  if (plain) {
    const std::string reply = absl::StrCat(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ",
        body.size(), "\r\n\r\n", body);
    ::send(socket.native_handle(), reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  beast::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(io, [this](beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors or similar: try again soon rather than spin.
      retry_accept.expires_after(std::chrono::milliseconds(50));
      retry_accept.async_wait([this](beast::error_code) {
        if (!stopping) Accept();
      });
      return;
    }
    beast::error_code peer_ec;
    const tcp::endpoint peer = socket.remote_endpoint(peer_ec);
    const std::string client = peer_ec ? std::string("?") : peer.address().to_string();
    if (!Admit(client)) {
      RefuseConnection(socket, !tls.has_value(), "too many connections\n");
    } else {
      socket.set_option(tcp::no_delay(true), peer_ec);
      if (tls.has_value()) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            this, beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *tls),
            client)
            ->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(this, beast::tcp_stream(std::move(socket)),
                                                     client)
            ->Start();
      }
    }
    Accept();
  });
}

absl::Status HttpServer::Impl::Listen() {
  const std::string& listen = options.listen;
  const size_t colon = listen.rfind(':');
  int want_port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &want_port) ||
      want_port < 0 || want_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.flag, " wants HOST:PORT, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (!options.tls_cert_file.empty()) {
    try {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(options.tls_cert_file);
      tls->use_private_key_file(options.tls_key_file, ssl::context::pem);
      if (!options.tls_client_ca_file.empty()) {
        tls->load_verify_file(options.tls_client_ca_file);
        tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      }
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.flag, ": cannot serve HTTPS with --tls-cert and --tls-key (", e.what(), ")"));
    }
  }
  beast::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints =
      resolver.resolve(host.empty() ? "0.0.0.0" : host, std::to_string(want_port),
                       tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot listen on ", listen, " (", options.flag, "): ", ec ? ec.message() : "no address"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(options.backlog, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen on ", listen, " (", options.flag, "): ", ec.message()));
  }
  port = acceptor.local_endpoint().port();
  Accept();
  io_thread = std::thread([this] { io.run(); });
  return absl::OkStatus();
}

void HttpServer::Impl::Stop() {
  if (!io_thread.joinable()) return;
  stopping = true;
  net::post(io, [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
    retry_accept.cancel();
    // Under the lock: a session cannot leave (be destroyed) while it is told to stop.
    std::lock_guard<std::mutex> lock(mu);
    for (SessionBase* s : sessions) s->Abort();
  });
  pool.Join();  // handlers see their clients gone and return; their last writes need the I/O thread
  io.stop();
  io_thread.join();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              std::vector<HttpRoute> routes) {
  if (options.max_connections < 1 || options.max_connections_per_client < 1) {
    return absl::InvalidArgumentError("HTTP connection caps must be >= 1");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(routes));
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { impl_->Stop(); }
int HttpServer::port() const { return impl_->port; }
bool HttpServer::https() const { return impl_->tls.has_value(); }

}  // namespace moe
