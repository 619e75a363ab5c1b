// The todd CLI's network side: one HTTP/1.1 exchange per call (Boost.Beast)
// and the lock-step test-run status stream. Every wait is bounded.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace todd::cli {

/// The server could not be reached (resolve or connect failed). what() is
/// "cannot reach ToDD server at HOST:PORT: connection refused" and the like.
class ConnectError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// The exchange failed after connecting (timeout, connection closed without
/// a reply, malformed HTTP).
class TransportError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// Where the server is. host may be a name, an IPv4 or an IPv6 address;
/// every address it resolves to is tried in turn, like Go's dialer.
struct ServerAddress {
    std::string host = "localhost";
    std::string port = "8080";

    /// "host:port", with [] around an IPv6 address.
    std::string display() const;
};

struct HttpReply {
    unsigned status = 0;
    std::string reason; ///< the reason phrase as sent ("OK")
    std::string body;

    /// "200 OK": what the Go CLI prints for a status.
    std::string status_line() const;
};

/// Performs one request. @p body non-empty or @p method POST adds
/// Content-Type: application/json. Bodies above 64 MiB are refused.
/// @throws ConnectError, TransportError
HttpReply http_request(const ServerAddress &server, const std::string &method,
                       const std::string &target, const std::string &body,
                       std::chrono::milliseconds timeout);

/// The client end of the test-run status stream (one JSON line per read,
/// the client answering each with "ack\n").
class StatusStream {
  public:
    /// Connects, retrying every 50 ms while the connection is refused (the
    /// server may open the listener just after replying to the run
    /// request), until @p deadline. @throws ConnectError
    StatusStream(const ServerAddress &server,
                 std::chrono::steady_clock::time_point deadline);
    ~StatusStream();
    StatusStream(const StatusStream &) = delete;
    StatusStream &operator=(const StatusStream &) = delete;

    /// Next line without its '\n', or nullopt when the server closed the
    /// stream. @throws TransportError on timeout (@p deadline) or error.
    std::optional<std::string>
    read_line(std::chrono::steady_clock::time_point deadline);

    /// Sends "ack\n". @throws TransportError
    void ack(std::chrono::steady_clock::time_point deadline);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace todd::cli
