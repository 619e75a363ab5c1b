// SPDX-License-Identifier: Apache-2.0
// A small Boost.Beast HTTP/1.1 server (keep-alive, body limit, idle
// timeout) and replies shaped as Go's net/http writes them.
#pragma once

// Boost 1.74 asio/awaitable.hpp uses std::exchange without <utility>.
#include <optional>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <functional>
#include <memory>
#include <string>

namespace todd::server::http {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Request = bhttp::request<bhttp::string_body>;
using Response = bhttp::response<bhttp::string_body>;
/** Runs on the I/O thread; exceptions become 500 Internal Error. */
using Handler = std::function<Response(const Request &)>;

/** Accepts connections and serves them with a handler. */
class Listener : public std::enable_shared_from_this<Listener> {
  public:
    /** Bind host:port (port 0 = any free one); throws std::system_error. */
    Listener(asio::io_context &ioc, const std::string &host, uint16_t port,
             Handler handler, std::string name);
    void start();
    void stop();
    uint16_t port() const { return port_; }

  private:
    void accept();
    asio::io_context &ioc_;
    tcp::acceptor acceptor_;
    std::shared_ptr<Handler> handler_;
    std::string name_;
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

} // namespace todd::server::http
