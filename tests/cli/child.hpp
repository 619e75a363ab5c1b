// Child processes for the CLI's end-to-end tests: spawn with output to files,
// bounded waits, termination by pid.
#pragma once

#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

namespace todd::cli::test {

inline std::string slurp(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// Starts argv[0] with stdin from @p in_path, stdout/stderr to files and
/// @p extra_env added to the environment. Throws if it cannot start.
inline pid_t spawn(const std::vector<std::string> &argv,
                   const std::string &in_path, const std::string &out_path,
                   const std::string &err_path,
                   const std::vector<std::string> &extra_env = {})
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char *> env;
    for (char **e = environ; *e; ++e)
        env.push_back(*e);
    for (const auto &e : extra_env)
        env.push_back(const_cast<char *>(e.c_str()));
    env.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), env.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        throw std::runtime_error("cannot start " + argv[0] + ": " +
                                 std::to_string(rc));
    return pid;
}

/// Waits for @p pid up to @p timeout; returns its exit status, 128+signal
/// if killed by one, or -1 on timeout (the process is then left running).
inline int wait_for(pid_t pid, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 || std::chrono::steady_clock::now() >= deadline)
            return -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

/// SIGTERM, then SIGKILL if it has not exited within @p grace.
inline void stop(pid_t pid,
                 std::chrono::milliseconds grace = std::chrono::seconds(10))
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    if (wait_for(pid, grace) == -1) {
        kill(pid, SIGKILL);
        wait_for(pid, std::chrono::seconds(10));
    }
}

} // namespace todd::cli::test
