// SPDX-License-Identifier: Apache-2.0
// The accept loop shared by the REST, asset and status-stream listeners:
// bounded connections, and no busy loop when descriptors run out (EMFILE
// leaves the listening socket readable, so retrying at once spins).
#include <todd/service/http.hpp>

#include <todd/core/log.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace todd::service::http {

namespace {

bool out_of_resources(const boost::system::error_code &ec)
{
    if (ec.category() != boost::system::system_category())
        return false;
    switch (ec.value()) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: return true;
    default: return false;
    }
}

bool transient(const boost::system::error_code &ec)
{
    // A client gone before accept() took it, or a signal: try again now.
    return ec == asio::error::connection_aborted ||
           ec == asio::error::interrupted || ec == asio::error::try_again ||
           ec == asio::error::would_block ||
           (ec.category() == boost::system::system_category() &&
            ec.value() == EPROTO);
}

int open_reserve()
{
    return ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/** Send what fits without blocking, then close; reads what the client
 *  already sent first so that closing does not reset the connection. */
void refuse_fd(int fd, const std::string &refusal)
{
    if (!refusal.empty()) {
        char buf[4096];
        for (int i = 0; i < 16 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0;
             ++i) {
        }
        ssize_t w = ::send(fd, refusal.data(), refusal.size(),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
        ::shutdown(fd, SHUT_WR);
    }
    ::close(fd);
}

} // namespace

Connections::Connections(size_t max) : max_(max), reserve_(open_reserve()) {}

Connections::~Connections()
{
    if (reserve_ >= 0)
        ::close(reserve_);
}

bool Connections::shed_idle()
{
    Conn *oldest = nullptr;
    for (Conn *c : all_)
        if (c->idle && (!oldest || c->idle_since < oldest->idle_since))
            oldest = c;
    if (!oldest)
        return false;
    all_.erase(oldest);
    oldest->shed();
    return true;
}

bool Connections::refuse_one(int listen_fd, const std::string &refusal)
{
    if (reserve_ < 0)
        reserve_ = open_reserve();
    if (reserve_ < 0)
        return false;
    ::close(reserve_);
    reserve_ = -1;
    int fd =
        ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0)
        refuse_fd(fd, refusal);
    reserve_ = open_reserve();
    return fd >= 0;
}

std::string busy_response()
{
    const std::string body = "Service Unavailable: too many connections\n";
    return "HTTP/1.1 503 Service Unavailable\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n"
           "Retry-After: 1\r\n"
           "Connection: close\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

AcceptLoop::AcceptLoop(tcp::acceptor &acceptor,
                       std::shared_ptr<Connections> conns, std::string name,
                       std::string refusal, OnSocket on_socket)
    : acceptor_(acceptor), conns_(std::move(conns)), name_(std::move(name)),
      refusal_(std::move(refusal)), on_socket_(std::move(on_socket)),
      timer_(acceptor.get_executor())
{
}

void AcceptLoop::stop()
{
    stopped_ = true;
    timer_.cancel();
}

void AcceptLoop::accept()
{
    if (stopped_ || !acceptor_.is_open())
        return;
    acceptor_.async_accept(asio::make_strand(acceptor_.get_executor()),
                           [self = shared_from_this()](
                               boost::system::error_code ec, tcp::socket s) {
                               self->on_accept(ec, std::move(s));
                           });
}

void AcceptLoop::end_episode()
{
    if (episode_)
        log::info(name_, "accepting connections again (" +
                             std::to_string(shed_) + " idle shed, " +
                             std::to_string(refused_) +
                             " refused while out of descriptors)");
    episode_ = false;
    backoff_ = std::chrono::milliseconds(0);
    shed_ = refused_ = 0;
}

void AcceptLoop::back_off()
{
    using std::chrono::milliseconds;
    backoff_ = backoff_.count() == 0
                   ? milliseconds(50)
                   : std::min(backoff_ * 2, milliseconds(1000));
    timer_.expires_after(backoff_);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
        self->accept();
    });
}

void AcceptLoop::on_accept(boost::system::error_code ec, tcp::socket s)
{
    if (ec == asio::error::operation_aborted || stopped_ ||
        !acceptor_.is_open())
        return;
    if (!ec) {
        // The episode ends after a quiet second, not at the first accept
        // that shedding made possible: one log line per episode.
        backoff_ = std::chrono::milliseconds(0);
        if (episode_ && std::chrono::steady_clock::now() - last_failure_ >
                            std::chrono::seconds(1))
            end_episode();
        if (conns_->full()) {
            // At the bound: the longest-idle connection makes room, else
            // the newcomer is told to come back.
            if (conns_->shed_idle()) {
                full_episode_ = false;
            } else {
                if (!full_episode_)
                    log::warn(name_, "at the connection bound (" +
                                         std::to_string(conns_->size()) +
                                         " open, none idle); refusing new "
                                         "connections");
                full_episode_ = true;
                boost::system::error_code ignored;
                refuse_fd(s.release(ignored), refusal_);
                return accept();
            }
        } else {
            full_episode_ = false;
        }
        on_socket_(std::move(s));
        return accept();
    }
    if (transient(ec))
        return accept();
    bool resources = out_of_resources(ec);
    last_failure_ = std::chrono::steady_clock::now();
    if (!episode_)
        log::warn(name_, "accept failed: " + ec.message() +
                             (resources ? "; shedding idle connections and "
                                          "backing off"
                                        : "; backing off"));
    episode_ = true;
    if (resources && conns_->shed_idle()) {
        ++shed_;
        return accept(); // a descriptor is free now
    }
    if (resources && conns_->refuse_one(acceptor_.native_handle(), refusal_))
        ++refused_;
    back_off();
}

} // namespace todd::service::http
