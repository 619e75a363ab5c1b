// SPDX-License-Identifier: Apache-2.0
// The todd-agent program as a child process, output captured.
#pragma once

#include "agent_harness.hpp"

#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace todd::test {

/** A running todd-agent with stdout+stderr captured. */
class Child {
  public:
    explicit Child(std::vector<std::string> args)
    {
        args.insert(args.begin(), TODD_AGENT_EXE);
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe");
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
        std::vector<char *> argv;
        for (auto &a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        if (::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ) !=
            0)
            throw std::runtime_error("spawn failed");
        posix_spawn_file_actions_destroy(&fa);
        ::close(p[1]);
        fd_ = p[0];
    }
    ~Child()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::close(fd_);
    }
    /** Read output until it contains needle (or EOF/limit). */
    bool wait_output(const std::string &needle,
                     std::chrono::milliseconds limit = 30s)
    {
        auto end = std::chrono::steady_clock::now() + limit;
        while (out_.find(needle) == std::string::npos) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                return false;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                return false;
            char buf[4096];
            ssize_t n = ::read(fd_, buf, sizeof buf);
            if (n <= 0)
                return out_.find(needle) != std::string::npos;
            out_.append(buf, n);
        }
        return true;
    }
    /** Wait for exit (bounded); returns the exit code, -1 otherwise. */
    int wait_exit(std::chrono::milliseconds limit = 30s)
    {
        wait_output("\x01never", limit); // drains until EOF, i.e. exit
        int status = 0;
        auto end = std::chrono::steady_clock::now() + 5s;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > end)
                return -1;
            std::this_thread::sleep_for(10ms);
        }
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    void signal(int sig) { ::kill(pid_, sig); }
    const std::string &output() const { return out_; }

  private:
    pid_t pid_ = -1;
    int fd_ = -1;
    std::string out_;
};

} // namespace todd::test
