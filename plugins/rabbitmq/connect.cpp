// SPDX-License-Identifier: Apache-2.0
// Connection opening for the RabbitMQ plugin; see connect.hpp.
#include "connect.hpp"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace todd_rabbitmq {

using todd::comms::sdk::Error;
using Clock = std::chrono::steady_clock;

std::string bytes_str(amqp_bytes_t b)
{
    return b.len == 0 ? std::string()
                      : std::string(static_cast<const char *>(b.bytes), b.len);
}

RpcFailure describe_rpc(amqp_rpc_reply_t r, const std::string &what)
{
    RpcFailure f;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        f.outcome = {TODD_COMMS_E_UNAVAILABLE,
                     what + ": " + amqp_error_string2(r.library_error)};
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto *m = static_cast<amqp_channel_close_t *>(r.reply.decoded);
        f.channel_closed = true;
        f.code = m->reply_code;
        f.text = bytes_str(m->reply_text);
        todd_comms_status st = TODD_COMMS_E_PROTOCOL;
        if (f.code == 403)
            st = TODD_COMMS_E_AUTH;
        f.outcome = {st, what + ": broker refused (" + std::to_string(f.code) +
                             " " + f.text + ")"};
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto *m = static_cast<amqp_connection_close_t *>(r.reply.decoded);
        f.code = m->reply_code;
        f.text = bytes_str(m->reply_text);
        todd_comms_status st = TODD_COMMS_E_UNAVAILABLE;
        if (f.code == 403 || f.code == 530)
            st = TODD_COMMS_E_AUTH;
        f.outcome = {st, what + ": broker closed the connection (" +
                             std::to_string(f.code) + " " + f.text + ")"};
    } else {
        f.outcome = {TODD_COMMS_E_UNAVAILABLE, what + ": no reply"};
    }
    return f;
}

bool rpc_ok(amqp_connection_state_t c)
{
    return amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
}

void close_ok_channel(amqp_connection_state_t c, amqp_channel_t ch)
{
    amqp_channel_close_ok_t ok{};
    ok.dummy = 0;
    amqp_send_method(c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
}

timeval to_timeval(milliseconds ms)
{
    timeval tv;
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
}

Waker::Waker() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC))
{
    if (fd_ < 0)
        throw Error(TODD_COMMS_E_INTERNAL,
                    std::string("eventfd: ") + std::strerror(errno));
}

Waker::~Waker()
{
    close(fd_);
}

void Waker::wake()
{
    uint64_t one = 1;
    ssize_t r = write(fd_, &one, sizeof one);
    (void)r;
}

void Waker::drain()
{
    uint64_t v;
    ssize_t r = read(fd_, &v, sizeof v);
    (void)r;
}

// SocketGuard ------------------------------------------------------------

void SocketGuard::watch(int fd)
{
    std::lock_guard<std::mutex> g(mu_);
    if (fd_ >= 0)
        close(fd_);
    fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    up_ = false;
    if (cut_soft_ || cut_hard_)
        shut_locked();
}

void SocketGuard::established()
{
    std::lock_guard<std::mutex> g(mu_);
    up_ = true;
}

void SocketGuard::release()
{
    std::lock_guard<std::mutex> g(mu_);
    if (fd_ >= 0)
        close(fd_);
    fd_ = -1;
    up_ = false;
}

void SocketGuard::cut(bool hard)
{
    std::lock_guard<std::mutex> g(mu_);
    (hard ? cut_hard_ : cut_soft_) = true;
    if (hard || !up_)
        shut_locked();
}

void SocketGuard::reset()
{
    std::lock_guard<std::mutex> g(mu_);
    cut_soft_ = cut_hard_ = false;
}

void SocketGuard::shut_locked()
{
    // Wakes every poll/recv on the socket, in whichever thread.
    if (fd_ >= 0)
        shutdown(fd_, SHUT_RDWR);
}

namespace {

bool stop_seen(int stop_fd)
{
    pollfd p{stop_fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

long long ms_left(Clock::time_point deadline)
{
    return std::chrono::duration_cast<milliseconds>(deadline - Clock::now())
        .count();
}

// A connected non-blocking TCP socket to b (as rabbitmq-c makes them), or -1
// with *why; *stopped when the stop fd fired. The wait for the connect also
// waits on the stop fd, so stop never waits for a broker that drops SYNs.
int tcp_connect(const Broker &b, Clock::time_point deadline, int stop_fd,
                std::string *why, bool *stopped)
{
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    addrinfo *list = nullptr;
    std::string port = std::to_string(b.port);
    int rc = getaddrinfo(b.host.c_str(), port.c_str(), &hints, &list);
    if (rc != 0) {
        *why =
            "cannot resolve host name (" + std::string(gai_strerror(rc)) + ")";
        return -1;
    }
    int fd = -1;
    *why = "no address";
    for (addrinfo *ai = list; ai != nullptr && fd < 0; ai = ai->ai_next) {
        int s = socket(ai->ai_family,
                       ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       ai->ai_protocol);
        if (s < 0) {
            *why = std::strerror(errno);
            continue;
        }
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        if (connect(s, ai->ai_addr, ai->ai_addrlen) != 0 &&
            errno != EINPROGRESS) {
            *why = std::strerror(errno);
            close(s);
            continue;
        }
        pollfd p[2] = {{s, POLLOUT, 0}, {stop_fd, POLLIN, 0}};
        int r;
        do {
            long long left = std::max(0LL, ms_left(deadline));
            r = poll(p, 2, static_cast<int>(std::min(left, 3600000LL)));
        } while (r < 0 && errno == EINTR);
        if (p[1].revents & POLLIN) {
            close(s);
            *stopped = true;
            break;
        }
        if (r == 0) {
            *why = "timed out";
            close(s);
            break; // the deadline is for the broker, not per address
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            *why = std::strerror(err);
            close(s);
            continue;
        }
        fd = s;
    }
    freeaddrinfo(list);
    return fd;
}

// The TLS handshake runs inside rabbitmq-c on a socket it opens itself;
// when the handshake starts, hand that socket to the link's guard so that
// stop() can end a handshake the broker never answers.
int guard_index()
{
    static const int index =
        SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

void on_tls_info(const SSL *ssl, int where, int)
{
    if ((where & SSL_CB_HANDSHAKE_START) == 0)
        return;
    auto *guard = static_cast<SocketGuard *>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), guard_index()));
    int fd = SSL_get_fd(ssl);
    if (guard != nullptr && fd >= 0)
        guard->watch(fd);
}

} // namespace

amqp_connection_state_t open_connection(const Settings &s, size_t *next,
                                        const char *role, const Interrupt &intr,
                                        Outcome *out, std::string *where)
{
    Outcome last{TODD_COMMS_E_UNAVAILABLE, "no broker configured"};
    for (size_t n = 0; n < s.brokers.size(); ++n) {
        const Broker &b = s.brokers[(*next + n) % s.brokers.size()];
        std::string addr = b.host + ":" + std::to_string(b.port);
        amqp_connection_state_t c = amqp_new_connection();
        if (c == nullptr) {
            last = {TODD_COMMS_E_NOMEM, "out of memory"};
            continue;
        }
        amqp_socket_t *sock =
            s.tls ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
        Outcome o;
        if (sock == nullptr) {
            o = {TODD_COMMS_E_INTERNAL, "cannot create socket"};
        } else if (s.tls) {
            amqp_ssl_socket_set_verify_peer(sock, s.verify_peer ? 1 : 0);
            amqp_ssl_socket_set_verify_hostname(sock,
                                                s.verify_hostname ? 1 : 0);
            if (!s.tls_ca.empty() &&
                amqp_ssl_socket_set_cacert(sock, s.tls_ca.c_str()) != 0)
                o = {TODD_COMMS_E_CONFIG,
                     "cannot load TLS CA file '" + s.tls_ca + "'"};
            else if (!s.tls_cert.empty() &&
                     amqp_ssl_socket_set_key(sock, s.tls_cert.c_str(),
                                             s.tls_key.c_str()) != 0)
                o = {TODD_COMMS_E_CONFIG, "cannot load TLS certificate '" +
                                              s.tls_cert + "' / key '" +
                                              s.tls_key + "'"};
        }
        auto deadline = Clock::now() + s.connect_timeout;
        if (o.ok()) {
            // Our own connect (interruptible); for TLS it only proves the
            // broker answers, then rabbitmq-c connects again for the
            // handshake, watched by the guard from its first byte.
            std::string why;
            bool stopped = false;
            int fd = tcp_connect(b, deadline, intr.stop_fd, &why, &stopped);
            if (stopped) {
                o = {TODD_COMMS_E_STATE, "stopped while connecting"};
            } else if (fd < 0) {
                o = {TODD_COMMS_E_UNAVAILABLE,
                     std::string(role) + " connect to " + addr + ": " + why};
            } else if (!s.tls) {
                amqp_tcp_socket_set_sockfd(sock, fd);
                intr.guard->watch(fd);
            } else {
                close(fd);
            }
        }
        if (o.ok() && s.tls) {
            auto *ctx =
                static_cast<SSL_CTX *>(amqp_ssl_socket_get_context(sock));
            SSL_CTX_set_ex_data(ctx, guard_index(), intr.guard);
            SSL_CTX_set_info_callback(ctx, &on_tls_info);
            timeval tv =
                to_timeval(milliseconds(std::max(1LL, ms_left(deadline))));
            int st =
                amqp_socket_open_noblock(sock, b.host.c_str(), b.port, &tv);
            if (st != AMQP_STATUS_OK) {
                todd_comms_status code = TODD_COMMS_E_UNAVAILABLE;
                std::string why = amqp_error_string2(st);
                if (st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED ||
                    st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED) {
                    code = TODD_COMMS_E_AUTH;
                    why = "TLS verification of the broker failed (" + why + ")";
                } else if (st == AMQP_STATUS_SSL_CONNECTION_FAILED ||
                           st == AMQP_STATUS_SSL_ERROR) {
                    code = TODD_COMMS_E_PROTOCOL;
                    why = "TLS handshake failed (" + why + ")";
                }
                o = {code,
                     std::string(role) + " connect to " + addr + ": " + why};
            }
        }
        if (o.ok()) {
            amqp_set_handshake_timeout(c, nullptr);
            timeval tv =
                to_timeval(milliseconds(std::max(1LL, ms_left(deadline))));
            amqp_set_handshake_timeout(c, &tv);
            amqp_rpc_reply_t r = amqp_login(c, s.vhost.c_str(), 0, frame_max,
                                            s.heartbeat, AMQP_SASL_METHOD_PLAIN,
                                            s.user.c_str(), s.password.c_str());
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                RpcFailure f = describe_rpc(r, "login");
                o = f.outcome;
                if (f.code == 403 ||
                    (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                     r.library_error == AMQP_STATUS_CONNECTION_CLOSED)) {
                    // RabbitMQ closes the socket (or sends 403) on bad
                    // credentials.
                    o.status = TODD_COMMS_E_AUTH;
                    o.detail = "login refused by " + addr + " for user '" +
                               s.user + "' on vhost '" + s.vhost +
                               "': wrong user name or password" +
                               (f.text.empty() ? "" : " (" + f.text + ")");
                } else if (f.code == 530) {
                    o.status = TODD_COMMS_E_AUTH;
                    o.detail = "vhost '" + s.vhost + "' refused by " + addr +
                               " for user '" + s.user + "' (" + f.text + ")";
                } else {
                    o.detail = std::string(role) + " login to " + addr + ": " +
                               o.detail;
                }
            }
        }
        if (!o.ok() && o.status != TODD_COMMS_E_STATE &&
            stop_seen(intr.stop_fd))
            o = {TODD_COMMS_E_STATE, "stopped while connecting"};
        if (o.ok()) {
            amqp_channel_open(c, pub_channel);
            if (!rpc_ok(c))
                o = describe_rpc(amqp_get_rpc_reply(c), "channel.open").outcome;
        }
        if (o.ok()) {
            // Detect dead connections in RPCs even without heartbeats.
            timeval rpc =
                to_timeval(std::max(s.connect_timeout, milliseconds(10000)));
            amqp_set_rpc_timeout(c, &rpc);
            *next = (*next + n) % s.brokers.size();
            *where = addr;
            *out = {};
            return c;
        }
        amqp_destroy_connection(c);
        intr.guard->release();
        last = o;
        if (o.status == TODD_COMMS_E_STATE)
            break;
    }
    *next = (*next + 1) % s.brokers.size();
    *out = last;
    return nullptr;
}

void close_connection(amqp_connection_state_t c, bool graceful)
{
    if (c == nullptr)
        return;
    if (graceful) {
        timeval tv{1, 0};
        amqp_set_rpc_timeout(c, &tv);
        amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(c);
}

milliseconds Backoff::next()
{
    milliseconds d = cur_;
    cur_ = std::min(cap_, cur_ * 2);
    std::uniform_int_distribution<long long> dist(d.count() / 2, d.count());
    return milliseconds(dist(rng_));
}

} // namespace todd_rabbitmq
