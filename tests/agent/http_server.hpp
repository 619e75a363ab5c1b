// SPDX-License-Identifier: Apache-2.0
// A tiny HTTP/1.0 file server on 127.0.0.1:<free port> for download tests:
// GET of a known path -> 200 with its body, anything else -> 404.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <map>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace todd::test {

class HttpServer {
  public:
    explicit HttpServer(std::map<std::string, std::string> files)
        : files_(std::move(files))
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        socklen_t len = sizeof a;
        if (fd_ < 0 ||
            ::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
            ::listen(fd_, 16) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0)
            throw std::runtime_error("test HTTP server: cannot listen");
        port_ = ntohs(a.sin_port);
        if (::pipe2(wake_, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe");
        thread_ = std::thread([this] { run(); });
    }
    ~HttpServer()
    {
        [[maybe_unused]] auto n = ::write(wake_[1], "x", 1);
        thread_.join();
        ::close(fd_);
        ::close(wake_[0]);
        ::close(wake_[1]);
    }
    int port() const { return port_; }

  private:
    void run()
    {
        for (;;) {
            pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
            if (::poll(p, 2, -1) < 0)
                continue;
            if (p[1].revents)
                return;
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0)
                continue;
            serve(c);
            ::close(c);
        }
    }
    void serve(int c)
    {
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos &&
               req.size() < 65536) {
            pollfd p{c, POLLIN, 0};
            if (::poll(&p, 1, 10000) <= 0)
                return;
            ssize_t n = ::read(c, buf, sizeof buf);
            if (n <= 0)
                return;
            req.append(buf, n);
        }
        auto sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
        std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
        auto it = files_.find(path);
        std::string resp;
        if (it == files_.end())
            resp = "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        else
            resp = "HTTP/1.0 200 OK\r\nContent-Length: " +
                   std::to_string(it->second.size()) + "\r\n\r\n" + it->second;
        for (size_t done = 0; done < resp.size();) {
            ssize_t n =
                ::send(c, resp.data() + done, resp.size() - done, MSG_NOSIGNAL);
            if (n <= 0)
                return;
            done += n;
        }
    }

    std::map<std::string, std::string> files_;
    int fd_ = -1, port_ = 0;
    int wake_[2] = {-1, -1};
    std::thread thread_;
};

} // namespace todd::test
