#include "net.hpp"

// GCC 12 with -fsanitize=address reports a false -Wmaybe-uninitialized
// inside Beast's parser (boost::optional in basic_parser.hpp); the warning is
// located in the header, so silencing it for the includes is enough.
#pragma GCC diagnostic push
#if !defined(__clang__) // clang has no such warning and refuses the name
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop

#include <thread>

#include "todd_build_config.h"

namespace todd::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxBody = 64u << 20;
constexpr std::size_t kMaxLine = 16u << 20;
constexpr std::string_view kAck = "ack\n";

// Runs one asynchronous operation to completion on @p ioc; the stream's own
// expiry (tcp_stream::expires_*) bounds it.
template <class Start> error_code run_op(asio::io_context &ioc, Start start)
{
    error_code result;
    bool done = false;
    start([&](error_code ec, auto &&...) {
        result = ec;
        done = true;
    });
    ioc.restart();
    ioc.run();
    if (!done)
        return asio::error::operation_aborted;
    return result;
}

std::string describe(const error_code &ec)
{
    if (ec == asio::error::connection_refused)
        return "connection refused";
    if (ec == beast::error::timeout)
        return "timed out";
    if (ec == asio::error::host_not_found ||
        ec == asio::error::host_not_found_try_again)
        return "host not found";
    if (ec == asio::error::eof || ec == http::error::end_of_stream)
        return "connection closed by the server";
    if (ec == asio::error::connection_reset)
        return "connection reset by the server";
    std::string m = ec.message();
    if (!m.empty())
        m[0] =
            static_cast<char>(std::tolower(static_cast<unsigned char>(m[0])));
    return m;
}

std::chrono::milliseconds until(Clock::time_point deadline)
{
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    return std::max(left, std::chrono::milliseconds(1));
}

// Resolves and connects to the first address that accepts (each address is
// tried in turn). Returns "" or the reason it failed; @p refused tells
// whether the failure was a refused connection (worth retrying).
std::string try_connect(asio::io_context &ioc, beast::tcp_stream &stream,
                        const ServerAddress &server, Clock::time_point deadline,
                        bool &refused)
{
    refused = false;
    tcp::resolver resolver(ioc);
    error_code ec;
    bool resolved = false;
    tcp::resolver::results_type results;
    resolver.async_resolve(server.host, server.port,
                           [&](error_code e, tcp::resolver::results_type r) {
                               ec = e;
                               results = std::move(r);
                               resolved = true;
                           });
    ioc.restart();
    ioc.run_for(until(deadline));
    if (!resolved) {
        resolver.cancel();
        ioc.restart();
        ioc.run();
        return "name resolution timed out";
    }
    if (ec)
        return describe(ec);
    stream.expires_at(deadline);
    ec = run_op(ioc, [&](auto handler) {
        stream.async_connect(results, std::move(handler));
    });
    refused = ec == asio::error::connection_refused;
    return ec ? describe(ec) : std::string();
}

void connect(asio::io_context &ioc, beast::tcp_stream &stream,
             const ServerAddress &server, Clock::time_point deadline)
{
    bool refused;
    std::string why = try_connect(ioc, stream, server, deadline, refused);
    if (!why.empty())
        throw ConnectError("cannot reach ToDD server at " + server.display() +
                           ": " + why);
}

} // namespace

std::string ServerAddress::display() const
{
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + port;
    return host + ":" + port;
}

std::string HttpReply::status_line() const
{
    return std::to_string(status) + (reason.empty() ? "" : " " + reason);
}

HttpReply http_request(const ServerAddress &server, const std::string &method,
                       const std::string &target, const std::string &body,
                       std::chrono::milliseconds timeout)
{
    auto deadline = Clock::now() + timeout;
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    connect(ioc, stream, server, deadline);

    http::request<http::string_body> req(http::string_to_verb(method), target,
                                         11);
    req.set(http::field::host, server.display());
    req.set(http::field::user_agent, "todd-cli/" TODD_VERSION);
    if (method == "POST" || !body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = body;
    }
    req.prepare_payload();

    auto where = method + " http://" + server.display() + target;
    stream.expires_at(deadline);
    error_code ec = run_op(ioc, [&](auto handler) {
        http::async_write(stream, req, std::move(handler));
    });
    if (ec)
        throw TransportError(where + ": " + describe(ec));

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    ec = run_op(ioc, [&](auto handler) {
        http::async_read(stream, buffer, parser, std::move(handler));
    });
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == http::error::partial_message)
        throw TransportError(where +
                             ": the server closed the connection without a "
                             "reply");
    if (ec)
        throw TransportError(
            where + ": " + describe(ec) +
            (ec == beast::error::timeout
                 ? " after " + std::to_string(timeout.count()) + " ms"
                 : ""));
    const auto &res = parser.get();
    HttpReply reply;
    reply.status = res.result_int();
    reply.reason = std::string(res.reason());
    reply.body = res.body();
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return reply;
}

struct StatusStream::Impl {
    asio::io_context ioc;
    beast::tcp_stream stream{ioc};
    std::string buffer;
};

StatusStream::StatusStream(const ServerAddress &server,
                           Clock::time_point deadline)
    : impl_(std::make_unique<Impl>())
{
    while (true) {
        bool refused;
        std::string why =
            try_connect(impl_->ioc, impl_->stream, server, deadline, refused);
        if (why.empty())
            return;
        // Only a refused connection is retried: the listener may open just
        // after the run request was answered.
        if (!refused ||
            Clock::now() + std::chrono::milliseconds(50) >= deadline)
            throw ConnectError("cannot reach the test-run status stream at " +
                               server.display() + ": " + why);
        impl_->stream.close();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

StatusStream::~StatusStream()
{
    error_code ignored;
    impl_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    impl_->stream.close();
}

std::optional<std::string> StatusStream::read_line(Clock::time_point deadline)
{
    auto take = [&](std::size_t n) {
        std::string line = impl_->buffer.substr(0, n - 1);
        impl_->buffer.erase(0, n);
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        return line;
    };
    if (auto nl = impl_->buffer.find('\n'); nl != std::string::npos)
        return take(nl + 1);
    impl_->stream.expires_at(deadline);
    std::size_t n = 0;
    error_code ec = run_op(impl_->ioc, [&](auto handler) {
        asio::async_read_until(
            impl_->stream, asio::dynamic_buffer(impl_->buffer, kMaxLine), '\n',
            [&n, handler = std::move(handler)](error_code e,
                                               std::size_t got) mutable {
                n = got;
                handler(e);
            });
    });
    if (ec == asio::error::eof || ec == asio::error::connection_reset)
        return std::nullopt; // a partial last line without '\n' is dropped
    if (ec)
        throw TransportError("status stream: " + describe(ec));
    return take(n);
}

void StatusStream::ack(Clock::time_point deadline)
{
    impl_->stream.expires_at(deadline);
    error_code ec = run_op(impl_->ioc, [&](auto handler) {
        asio::async_write(impl_->stream, asio::buffer(kAck),
                          std::move(handler));
    });
    if (ec)
        throw TransportError("status stream: sending ack: " + describe(ec));
}

} // namespace todd::cli
