// SPDX-License-Identifier: Apache-2.0
#include "process.hpp"

#include "files.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

namespace todd::test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

int ExitStatus::code() const
{
    switch (how) {
    case How::exited: return value;
    case How::signaled: return 128 + value;
    case How::running: break;
    }
    return -1;
}

std::string ExitStatus::text() const
{
    switch (how) {
    case How::exited: return "exit " + std::to_string(value);
    case How::signaled: return "signal " + std::to_string(value);
    case How::running: break;
    }
    return "still running";
}

std::vector<std::string> environment_with(const std::vector<std::string> &extra)
{
    std::vector<std::string> env;
    for (char **e = environ; *e != nullptr; ++e) {
        std::string kv = *e;
        std::string name = kv.substr(0, kv.find('='));
        bool replaced = false;
        for (const auto &x : extra)
            replaced =
                replaced || x.compare(0, name.size() + 1, name + "=") == 0;
        if (!replaced)
            env.push_back(kv);
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

std::vector<char *> c_strings(std::vector<std::string> &v)
{
    std::vector<char *> out;
    for (auto &s : v)
        out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

Process::Process(std::vector<std::string> argv, SpawnOptions opts)
    : opts_(std::move(opts))
{
    if (argv.empty())
        throw std::runtime_error("Process: no program given");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, opts_.stdin_path.c_str(), O_RDONLY,
                                     0);
    int p[2] = {-1, -1};
    if (opts_.stdout_path.empty()) {
        if (::pipe2(p, O_CLOEXEC) != 0) {
            posix_spawn_file_actions_destroy(&fa);
            throw std::runtime_error(std::string("pipe: ") +
                                     std::strerror(errno));
        }
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    } else {
        posix_spawn_file_actions_addopen(&fa, 1, opts_.stdout_path.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (opts_.stderr_path.empty())
            posix_spawn_file_actions_adddup2(&fa, 1, 2);
        else
            posix_spawn_file_actions_addopen(&fa, 2, opts_.stderr_path.c_str(),
                                             O_WRONLY | O_CREAT | O_TRUNC,
                                             0644);
    }
    std::vector<std::string> env = environment_with(opts_.env);
    auto c_argv = c_strings(argv);
    auto c_env = c_strings(env);
    int rc = ::posix_spawn(&pid_, c_argv[0], &fa, nullptr, c_argv.data(),
                           c_env.data());
    posix_spawn_file_actions_destroy(&fa);
    if (p[1] >= 0)
        ::close(p[1]);
    fd_ = p[0];
    if (rc != 0) {
        pid_ = -1;
        if (fd_ >= 0)
            ::close(fd_);
        throw std::runtime_error("cannot start " + argv[0] + ": " +
                                 std::strerror(rc));
    }
}

Process::~Process()
{
    if (status_.running() && pid_ > 0)
        kill_now();
    if (fd_ >= 0)
        ::close(fd_);
}

ExitStatus Process::poll()
{
    if (!status_.running() || pid_ <= 0)
        return status_;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        if (WIFEXITED(st))
            status_ = {ExitStatus::How::exited, WEXITSTATUS(st)};
        else if (WIFSIGNALED(st))
            status_ = {ExitStatus::How::signaled, WTERMSIG(st)};
    }
    return status_;
}

bool Process::read_some(Clock::time_point until)
{
    if (fd_ < 0) { // file mode: nothing to drain
        auto left = until - Clock::now();
        if (left > 0ms)
            std::this_thread::sleep_for(std::min<Clock::duration>(left, 10ms));
        return !poll().running() ? false : Clock::now() < until;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - Clock::now());
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

bool Process::wait_output(const std::string &needle,
                          std::chrono::milliseconds limit, size_t from)
{
    auto until = Clock::now() + limit;
    while (output().find(needle, from) == std::string::npos) {
        if (!read_some(until))
            return output().find(needle, from) != std::string::npos;
    }
    return true;
}

ExitStatus Process::wait(std::chrono::milliseconds limit)
{
    auto until = Clock::now() + limit;
    while (poll().running()) {
        if (Clock::now() >= until)
            return status_;
        // The pipe's end (EOF) comes with the exit; a full pipe would
        // block the child, so keep reading.
        if (!read_some(std::min(until, Clock::now() + 20ms)) && fd_ >= 0)
            std::this_thread::sleep_for(1ms);
    }
    while (fd_ >= 0 && read_some(Clock::now() + 100ms)) {
    }
    return status_;
}

ExitStatus Process::terminate(std::chrono::milliseconds limit)
{
    signal(SIGTERM);
    return wait(limit);
}

ExitStatus Process::stop(std::chrono::milliseconds grace)
{
    if (terminate(grace).running())
        kill_now();
    return status_;
}

void Process::kill_now()
{
    if (!poll().running() || pid_ <= 0)
        return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    if (::waitpid(pid_, &st, 0) == pid_)
        status_ = {ExitStatus::How::signaled,
                   WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL};
}

void Process::signal(int sig)
{
    if (poll().running() && pid_ > 0)
        ::kill(pid_, sig);
}

std::string Process::output()
{
    if (fd_ >= 0 || opts_.stdout_path.empty())
        return out_;
    try {
        return read_file(opts_.stdout_path);
    } catch (const std::runtime_error &) {
        return ""; // not created yet
    }
}

std::string Process::error_output() const
{
    if (opts_.stderr_path.empty())
        return "";
    try {
        return read_file(opts_.stderr_path);
    } catch (const std::runtime_error &) {
        return "";
    }
}

} // namespace todd::test
