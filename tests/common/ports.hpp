// SPDX-License-Identifier: Apache-2.0
// TCP ports on 127.0.0.1 that a test holds for as long as it needs them:
// bound here, so no other process can take them between pick and use.
#pragma once

#include <netinet/in.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace todd::test {

/** A port that never answers like a service. listening() accepts nothing:
 *  with full=true its accept queue is filled first, so that new connects
 *  hang in SYN_SENT (the kernel drops their SYNs); with full=false connects
 *  complete and then nothing is ever said. refusing() is bound but not
 *  listening: connects are refused at once, and no one else can listen
 *  there meanwhile. Throws std::runtime_error when the socket cannot be
 *  made. */
class DeadPort {
  public:
    static DeadPort refusing() { return DeadPort(false, false); }
    static DeadPort listening(bool full) { return DeadPort(full, true); }
    explicit DeadPort(bool full, bool listening = true)
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (fd_ < 0 ||
            ::bind(fd_, reinterpret_cast<sockaddr *>(&a), len) != 0 ||
            (listening && ::listen(fd_, full ? 0 : 64) != 0) ||
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
            if (fd_ >= 0)
                ::close(fd_);
            throw std::runtime_error("cannot bind a socket on 127.0.0.1");
        }
        port_ = ntohs(a.sin_port);
        if (full) {
            // Backlog 0 holds one connection: after it, SYNs are dropped.
            for (int i = 0; i < 2; ++i) {
                int c = ::socket(AF_INET,
                                 SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                ::connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
                fillers_.push_back(c);
            }
        }
    }
    DeadPort(DeadPort &&o) noexcept
        : fd_(std::exchange(o.fd_, -1)), port_(o.port_),
          fillers_(std::move(o.fillers_))
    {
    }
    DeadPort &operator=(DeadPort &&) = delete;
    ~DeadPort()
    {
        for (int c : fillers_)
            ::close(c);
        if (fd_ >= 0)
            ::close(fd_);
    }
    int port() const { return port_; }
    std::string port_str() const { return std::to_string(port_); }

  private:
    int fd_ = -1, port_ = 0;
    std::vector<int> fillers_;
};

} // namespace todd::test
