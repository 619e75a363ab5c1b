// SPDX-License-Identifier: Apache-2.0
// The real todd-server, todd-agent and todd-comms binaries as child
// processes, and sockets that make a broker look unreachable.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace sigtest {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/** A program with stdout+stderr captured. Killed if still running at the
 *  end of the test. */
class Program {
  public:
    explicit Program(std::vector<std::string> argv)
    {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe");
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
        std::vector<char *> args;
        for (auto &a : argv)
            args.push_back(a.data());
        args.push_back(nullptr);
        int rc =
            ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(p[1]);
        fd_ = p[0];
        if (rc != 0)
            throw std::runtime_error("cannot run " + argv[0]);
    }
    ~Program()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::close(fd_);
    }
    Program(const Program &) = delete;
    Program &operator=(const Program &) = delete;

    /** Read output until it contains needle (after offset `from`), EOF or
     *  the limit. */
    bool wait_output(const std::string &needle,
                     std::chrono::milliseconds limit = 60s, size_t from = 0)
    {
        auto end = Clock::now() + limit;
        while (out_.find(needle, from) == std::string::npos) {
            if (!read_some(end))
                return out_.find(needle, from) != std::string::npos;
        }
        return true;
    }

    /** SIGTERM, then wait for the exit for at most `limit`. Returns the
     *  wait status text ("exit 0", "signal 9", "still running after ...")
     *  and how long it took. */
    std::string terminate(std::chrono::milliseconds limit,
                          std::chrono::milliseconds *took)
    {
        auto t0 = Clock::now();
        ::kill(pid_, SIGTERM);
        auto end = t0 + limit;
        int status = 0;
        for (;;) {
            pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_)
                break;
            if (Clock::now() >= end) {
                *took = std::chrono::duration_cast<std::chrono::milliseconds>(
                    Clock::now() - t0);
                return "still running " + std::to_string(took->count()) +
                       " ms after SIGTERM";
            }
            // Drain the output meanwhile (a full pipe would block it).
            read_some(std::min(end, Clock::now() + 20ms));
        }
        *took = std::chrono::duration_cast<std::chrono::milliseconds>(
            Clock::now() - t0);
        pid_ = -1;
        while (read_some(Clock::now() + 100ms)) {
        }
        if (WIFEXITED(status))
            return "exit " + std::to_string(WEXITSTATUS(status));
        return "signal " + std::to_string(WTERMSIG(status));
    }

    void kill_now()
    {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    const std::string &output() const { return out_; }
    size_t output_size() const { return out_.size(); }

  private:
    bool read_some(Clock::time_point end)
    {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - Clock::now());
        if (left.count() <= 0)
            return false;
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            return false;
        char buf[4096];
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n <= 0)
            return false;
        out_.append(buf, static_cast<size_t>(n));
        return true;
    }

    pid_t pid_ = -1;
    int fd_ = -1;
    std::string out_;
};

/** A TCP port on 127.0.0.1 that never answers like a broker: it listens
 *  but never accepts. With full=true its accept queue is filled first, so
 *  that new connects hang in SYN_SENT (the kernel drops their SYNs); with
 *  full=false connects complete and then nothing is ever said. refusing()
 *  is bound but not listening: connects are refused at once. */
class DeadPort {
  public:
    static DeadPort refusing() { return DeadPort(false, false); }
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
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0)
            throw std::runtime_error("cannot make a listening socket");
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
        : fd_(o.fd_), port_(o.port_), fillers_(std::move(o.fillers_))
    {
        o.fd_ = -1;
    }
    ~DeadPort()
    {
        for (int c : fillers_)
            ::close(c);
        ::close(fd_);
    }
    int port() const { return port_; }

  private:
    int fd_ = -1, port_ = 0;
    std::vector<int> fillers_;
};

/** A fresh directory, removed at the end. */
class TempDir {
  public:
    TempDir()
    {
        char tmpl[] = "/tmp/todd-signals-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr)
            throw std::runtime_error("mkdtemp");
        path_ = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string &path() const { return path_; }

  private:
    std::string path_;
};

} // namespace sigtest
