// SPDX-License-Identifier: Apache-2.0
// The test-run status stream that `todd run` follows: one JSON line per
// change, each acknowledged by the client.
#include "server_impl.hpp"

namespace todd::server {

std::shared_ptr<Run> Server::Impl::claim_stream_run()
{
    std::shared_ptr<Run> best;
    auto now = steady::now();
    for (auto &[id, r] : runs) {
        if (r->streamed)
            continue;
        if (r->phase == Run::Phase::done && now - r->ended > cfg.stream_linger)
            continue;
        if (!best || r->seq < best->seq)
            best = r;
    }
    if (best)
        best->streamed = true;
    return best;
}

class Server::Impl::StreamSession
    : public std::enable_shared_from_this<StreamSession>,
      public http::Conn {
  public:
    StreamSession(Impl &impl, tcp::socket s)
        : impl_(impl), sock_(std::move(s)), timer_(impl.ioc), conns_(impl.conns)
    {
        conns_->add(this); // counted, never idle: not shed
    }
    ~StreamSession() override { conns_->remove(this); }
    void shed() override { close(); }
    void start()
    {
        run_ = impl_.claim_stream_run();
        if (run_)
            log::info(C, "status stream attached to testrun " + run_->uuid);
        else
            log::info(C, "status stream client but no testrun to show");
        send();
    }

  private:
    void send()
    {
        final_ = !run_ || run_->phase == Run::Phase::done;
        line_ = (run_ ? run_->status_line() : "{}") + "\n";
        sent_version_ = run_ ? run_->version : 0;
        asio::async_write(
            sock_, asio::buffer(line_),
            [self = shared_from_this()](boost::system::error_code ec, size_t) {
                if (ec)
                    return self->close();
                self->wait_ack();
            });
    }
    void wait_ack()
    {
        timer_.expires_after(impl_.cfg.stream_ack_timeout);
        timer_.async_wait([self = shared_from_this()](
                              boost::system::error_code ec) {
            if (ec)
                return;
            log::warn(C, "status stream client sent no ack within " +
                             std::to_string(
                                 self->impl_.cfg.stream_ack_timeout.count()) +
                             " ms; dropped");
            self->close();
        });
        asio::async_read_until(sock_, in_, '\n',
                               [self = shared_from_this()](
                                   boost::system::error_code ec, size_t n) {
                                   self->timer_.cancel();
                                   if (ec)
                                       return self->close();
                                   self->in_.consume(n);
                                   if (self->final_)
                                       return self->close();
                                   self->next();
                               });
    }
    void next()
    {
        if (!sock_.is_open())
            return;
        if (run_->version != sent_version_ || run_->phase == Run::Phase::done)
            return send();
        run_->waiters.push_back([self = shared_from_this()] { self->next(); });
    }
    void close()
    {
        boost::system::error_code ec;
        timer_.cancel();
        sock_.shutdown(tcp::socket::shutdown_both, ec);
        sock_.close(ec);
        conns_->remove(this);
    }
    Impl &impl_;
    tcp::socket sock_;
    asio::steady_timer timer_;
    asio::streambuf in_{4096};
    std::shared_ptr<Run> run_;
    std::string line_;
    uint64_t sent_version_ = 0;
    bool final_ = false;
    std::shared_ptr<http::Connections> conns_;
};

void Server::Impl::accept_stream()
{
    stream_loop = std::make_shared<http::AcceptLoop>(
        *stream_acceptor, conns, "stream", "", [this](tcp::socket s) {
            boost::system::error_code ec;
            s.set_option(tcp::no_delay(true), ec);
            std::make_shared<StreamSession>(*this, std::move(s))->start();
        });
    stream_loop->start();
}

} // namespace todd::server
