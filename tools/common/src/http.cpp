// SPDX-License-Identifier: Apache-2.0
#include <todd/service/http.hpp>

#include <todd/core/config.hpp>
#include <todd/core/log.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <ctime>

namespace todd::service::http {

namespace beast = boost::beast;

namespace {

class Session : public std::enable_shared_from_this<Session>, public Conn {
  public:
    Session(tcp::socket s, std::shared_ptr<Handler> h, const std::string &name,
            const Limits &limits, std::shared_ptr<Connections> conns)
        : stream_(std::move(s)), handler_(std::move(h)), name_(name),
          limits_(limits), conns_(std::move(conns))
    {
        conns_->add(this);
    }
    ~Session() override { conns_->remove(this); }
    void start() { read(); }
    void shed() override { close(); }

  private:
    void read()
    {
        parser_.emplace();
        parser_->body_limit(limits_.body_limit);
        parser_->header_limit(static_cast<uint32_t>(
            std::min<size_t>(limits_.header_limit, UINT32_MAX)));
        stream_.expires_after(limits_.idle_timeout);
        // Waiting for a request (first or keep-alive): the first to go
        // when descriptors run out.
        idle = true;
        idle_since = std::chrono::steady_clock::now();
        bhttp::async_read(
            stream_, buf_, *parser_,
            [self = shared_from_this()](beast::error_code ec, size_t) {
                self->idle = false;
                self->on_read(ec);
            });
    }

    void on_read(beast::error_code ec)
    {
        if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
            ec == beast::error::timeout ||
            ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || !open_) {
            close();
            return;
        }
        if (ec) {
            // Malformed or too large: say so and close, as Go does. A body
            // over the bound is refused from its Content-Length, unread.
            Request dummy;
            dummy.version(11);
            auto code = bhttp::status::bad_request;
            std::string what = "Bad request: " + ec.message();
            if (ec == bhttp::error::body_limit) {
                code = bhttp::status::payload_too_large;
                what = "Request body larger than " +
                       std::to_string(limits_.body_limit) + " bytes";
            } else if (ec == bhttp::error::header_limit) {
                code = bhttp::status::request_header_fields_too_large;
                what = "Request header larger than " +
                       std::to_string(limits_.header_limit) + " bytes";
            }
            log::debug(name_, "bad request: " + what);
            Response res = error(dummy, code, what);
            res.keep_alive(false);
            write(std::move(res));
            return;
        }
        const Request &req = parser_->get();
        Response res;
        try {
            res = (*handler_)(req);
        } catch (const std::exception &e) {
            log::error(name_, std::string(req.method_string()) + " " +
                                  std::string(req.target()) + ": " + e.what());
            res = error(req, bhttp::status::internal_server_error,
                        "Internal Error");
        }
        res.keep_alive(req.keep_alive());
        write(std::move(res));
    }

    void write(Response res)
    {
        res_ = std::make_shared<Response>(std::move(res));
        res_->prepare_payload();
        stream_.expires_after(limits_.idle_timeout);
        bhttp::async_write(
            stream_, *res_,
            [self = shared_from_this()](beast::error_code ec, size_t) {
                if (!ec && !self->res_->keep_alive() &&
                    self->res_->result_int() >= 400)
                    return self->linger();
                if (ec || !self->res_->keep_alive()) {
                    self->close();
                    return;
                }
                self->res_.reset();
                self->read();
            });
    }

    // After refusing a request whose body was not read: stop sending and
    // discard a little of what the client still sends, so that closing does
    // not reset the connection before the client has read the reply.
    void linger()
    {
        if (drain_.empty()) { // first call: one second in all
            beast::error_code ec;
            stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
            stream_.expires_after(std::chrono::seconds(1));
            drain_.resize(16384);
        }
        stream_.async_read_some(
            asio::buffer(drain_),
            [self = shared_from_this()](beast::error_code ec, size_t n) {
                self->drained_ += n;
                if (ec || self->drained_ >= 65536)
                    return self->close();
                self->linger();
            });
    }

    void close()
    {
        if (!open_)
            return;
        open_ = false;
        idle = false;
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream_.socket().close(ec);
        conns_->remove(this);
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buf_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    std::shared_ptr<Response> res_;
    std::shared_ptr<Handler> handler_;
    std::string name_;
    Limits limits_;
    std::shared_ptr<Connections> conns_;
    bool open_ = true;
    std::string drain_;
    size_t drained_ = 0;
};

} // namespace

tcp::endpoint resolve_endpoint(asio::io_context &ioc, const std::string &host,
                               uint16_t port)
{
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
    if (!ec)
        return {addr, port};
    tcp::resolver r(ioc);
    auto results = r.resolve(host, std::to_string(port));
    return results.begin()->endpoint();
}

Listener::Listener(asio::io_context &ioc, const std::string &host,
                   uint16_t port, Handler handler, std::string name,
                   Limits limits, std::shared_ptr<Connections> conns)
    : acceptor_(ioc), handler_(std::make_shared<Handler>(std::move(handler))),
      name_(std::move(name)), limits_(limits), conns_(std::move(conns))
{
    listen_on(ioc, acceptor_, host, port, name_);
    port_ = acceptor_.local_endpoint().port();
}

void listen_on(asio::io_context &ioc, tcp::acceptor &acceptor,
               const std::string &host, uint16_t port, const std::string &what)
{
    tcp::endpoint ep;
    try {
        ep = resolve_endpoint(ioc, host, port);
    } catch (const boost::system::system_error &e) {
        // A name that does not exist is the configuration's fault; a
        // resolver that cannot answer now is a runtime failure.
        if (e.code() == asio::error::host_not_found)
            throw core::ConfigError(
                what + " address \"" + host +
                "\" does not resolve: " + e.code().message());
        throw std::runtime_error("cannot resolve " + what + " address \"" +
                                 host + "\": " + e.code().message());
    }
    try {
        acceptor.open(ep.protocol());
        acceptor.set_option(asio::socket_base::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen();
    } catch (const boost::system::system_error &e) {
        // "bind: Address already in use" alone does not say which of the
        // three listeners, nor where.
        throw std::runtime_error("cannot listen on " + host + ":" +
                                 std::to_string(port) + " (" + what +
                                 "): " + e.code().message());
    }
}

void Listener::start()
{
    std::weak_ptr<Listener> weak = shared_from_this();
    loop_ = std::make_shared<AcceptLoop>(
        acceptor_, conns_, name_, busy_response(), [weak](tcp::socket s) {
            auto self = weak.lock();
            if (!self)
                return;
            boost::system::error_code ec;
            s.set_option(tcp::no_delay(true), ec);
            std::make_shared<Session>(std::move(s), self->handler_, self->name_,
                                      self->limits_, self->conns_)
                ->start();
        });
    loop_->start();
}

void Listener::stop()
{
    if (loop_)
        loop_->stop();
    boost::system::error_code ec;
    acceptor_.close(ec);
}

std::string http_date()
{
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed",
                                 "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                  days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                  tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

Response ok(const Request &req, std::string body)
{
    Response res{bhttp::status::ok, req.version()};
    res.set(bhttp::field::date, http_date());
    if (!body.empty())
        res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(body);
    return res;
}

Response error(const Request &req, bhttp::status code,
               const std::string &message)
{
    Response res{code, req.version() ? req.version() : 11};
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    res.set("X-Content-Type-Options", "nosniff");
    res.set(bhttp::field::date, http_date());
    res.body() = message + "\n";
    return res;
}

Response not_found(const Request &req)
{
    return error(req, bhttp::status::not_found, "404 page not found");
}

} // namespace todd::service::http
