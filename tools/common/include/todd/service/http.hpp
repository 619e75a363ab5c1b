// SPDX-License-Identifier: Apache-2.0
// A small Boost.Beast HTTP/1.1 server (keep-alive, body, header and
// connection bounds, idle timeout) and replies shaped as Go's net/http
// writes them. The accept loop survives running out of descriptors: it
// sheds the connection idle longest, answers 503 through a reserve
// descriptor and backs off instead of spinning (docs/server.md, Limits).
#pragma once

// Boost 1.74 asio/awaitable.hpp uses std::exchange without <utility>.
#include <optional>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace todd::service::http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Request = bhttp::request<bhttp::string_body>;
using Response = bhttp::response<bhttp::string_body>;
/** Runs on the I/O thread; exceptions become 500 Internal Error. */
using Handler = std::function<Response(const Request &)>;

/** Bounds of every listener ([API] keys, docs/server.md). */
struct Limits {
    size_t body_limit = 1 << 20;
    size_t header_limit = 8192;
    size_t max_connections = 1024;
    std::chrono::milliseconds idle_timeout{120000};
};

/** An open connection as the shared table sees it. */
class Conn {
  public:
    virtual ~Conn() = default;
    /** Close the socket now (the descriptor is freed before return). */
    virtual void shed() = 0;
    /** Waiting for a request that has not begun: may be shed. */
    bool idle = false;
    std::chrono::steady_clock::time_point idle_since;
};

/**
 * The open connections of all of a server's listeners, and one reserve
 * descriptor. Used on the single I/O thread only (no locking): shedding
 * closes another session's socket synchronously, which is safe there.
 */
class Connections {
  public:
    explicit Connections(size_t max);
    ~Connections();
    Connections(const Connections &) = delete;
    Connections &operator=(const Connections &) = delete;

    void add(Conn *c) { all_.insert(c); }
    void remove(Conn *c) { all_.erase(c); }
    size_t size() const { return all_.size(); }
    bool full() const { return all_.size() >= max_; }
    /** Close the connection idle longest; false when none is idle. */
    bool shed_idle();
    /** Out of descriptors and nothing to shed: free the reserve, accept
     *  one pending connection, send it `refusal`, close it, take the
     *  reserve back. False when nothing was pending or no reserve. */
    bool refuse_one(int listen_fd, const std::string &refusal);

  private:
    size_t max_;
    std::set<Conn *> all_;
    int reserve_ = -1;
};

/**
 * accept() in a loop for one acceptor. When descriptors or memory run out
 * it sheds the connection idle longest, else refuses one pending client via
 * the reserve descriptor and backs off (50 ms doubling to 1 s), logging
 * once per episode. Above max_connections it sheds an idle connection or
 * refuses the new one.
 */
class AcceptLoop : public std::enable_shared_from_this<AcceptLoop> {
  public:
    using OnSocket = std::function<void(tcp::socket)>;
    AcceptLoop(tcp::acceptor &acceptor, std::shared_ptr<Connections> conns,
               std::string name, std::string refusal, OnSocket on_socket);
    void start() { accept(); }
    void stop();

  private:
    void accept();
    void on_accept(boost::system::error_code ec, tcp::socket s);
    void back_off();
    void end_episode();
    tcp::acceptor &acceptor_;
    std::shared_ptr<Connections> conns_;
    std::string name_, refusal_;
    OnSocket on_socket_;
    asio::steady_timer timer_;
    std::chrono::milliseconds backoff_{0};
    bool episode_ = false; // from the first failure to a quiet second
    std::chrono::steady_clock::time_point last_failure_;
    bool full_episode_ = false;
    unsigned long long refused_ = 0, shed_ = 0;
    bool stopped_ = false;
};

/** The 503 sent to an HTTP client refused for want of descriptors. */
std::string busy_response();

/** Accepts connections and serves them with a handler. */
class Listener : public std::enable_shared_from_this<Listener> {
  public:
    /** Bind host:port (port 0 = any free one); throws std::system_error. */
    Listener(asio::io_context &ioc, const std::string &host, uint16_t port,
             Handler handler, std::string name, Limits limits,
             std::shared_ptr<Connections> conns);
    void start();
    void stop();
    uint16_t port() const { return port_; }

  private:
    tcp::acceptor acceptor_;
    std::shared_ptr<Handler> handler_;
    std::string name_;
    Limits limits_;
    std::shared_ptr<Connections> conns_;
    std::shared_ptr<AcceptLoop> loop_;
    uint16_t port_ = 0;
};

/** "Mon, 02 Jan 2006 15:04:05 GMT" now. */
std::string http_date();
/** 200 with body; text/plain; charset=utf-8 unless empty (as Go sniffs). */
Response ok(const Request &req, std::string body);
/** Go's http.Error: code, text/plain, nosniff, body = message + "\n". */
Response error(const Request &req, bhttp::status code,
               const std::string &message);
/** Go's mux 404: "404 page not found\n". */
Response not_found(const Request &req);
/** Resolve host (name or address) to an endpoint; throws. */
tcp::endpoint resolve_endpoint(asio::io_context &ioc, const std::string &host,
                               uint16_t port);
/** Open, bind and listen on host:port (0: a free port). Throws
 *  core::ConfigError when host is a name that does not exist, else
 *  std::runtime_error naming the listener `what`, the address and why. */
void listen_on(asio::io_context &ioc, tcp::acceptor &acceptor,
               const std::string &host, uint16_t port, const std::string &what);

} // namespace todd::service::http
