// SPDX-License-Identifier: Apache-2.0
// Shared by the loader tests: private temporary directories and running a
// real program (todd-comms, todd-agent, todd-server) to see how it ends.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace loader_test {

namespace fs = std::filesystem;

#define EXPECT_HAS(text, needle)                                               \
    EXPECT_NE(std::string(text).find(needle), std::string::npos)               \
        << "missing \"" << (needle) << "\" in: " << (text)

/** A fresh directory (mode 0700 unless told), removed with all it holds. */
class TempDir {
  public:
    explicit TempDir(fs::perms mode = fs::perms::owner_all)
    {
        std::string tmpl =
            (fs::temp_directory_path() / "todd-loader-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        path_ = fs::canonical(tmpl);
        fs::permissions(path_, mode);
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const fs::path &path() const { return path_; }

  private:
    fs::path path_;
};

inline std::string read_file(const fs::path &p)
{
    std::ifstream f(p, std::ios::binary);
    if (!f)
        throw std::runtime_error("cannot read " + p.string());
    return std::string((std::istreambuf_iterator<char>(f)),
                       std::istreambuf_iterator<char>());
}

inline void write_file(const fs::path &p, const std::string &bytes,
                       fs::perms mode = fs::perms(0644))
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f)
        throw std::runtime_error("cannot write " + p.string());
    fs::permissions(p, mode);
}

/** How a program ended and what it printed (stdout and stderr). */
struct Ran {
    bool exited = false; // false: killed by a signal, or timed out
    int code = -1;       // exit status when exited
    int signal = 0;      // the signal that killed it, if one did
    bool timed_out = false;
    std::string output;
    std::string how() const
    {
        if (timed_out)
            return "timed out";
        if (!exited)
            return std::string("killed by signal ") + std::to_string(signal) +
                   " (" + strsignal(signal) + ")";
        return "exited " + std::to_string(code);
    }
};

/** Run argv (argv[0] a path), killed after the timeout. */
inline Ran run(const std::vector<std::string> &argv,
               std::chrono::seconds timeout = std::chrono::seconds(30))
{
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe: ") + strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0)
        throw std::runtime_error(std::string("fork: ") + strerror(errno));
    if (pid == 0) {
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
        std::vector<char *> a;
        for (const auto &s : argv)
            a.push_back(const_cast<char *>(s.c_str()));
        a.push_back(nullptr);
        ::execv(a[0], a.data());
        ::_exit(127);
    }
    ::close(out[1]);
    Ran r;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            r.timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        pollfd p{out[0], POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            continue;
        const ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0)
            break; // EOF: the program closed its output (it ended)
        r.output.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!r.timed_out && WIFEXITED(status)) {
        r.exited = true;
        r.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r.signal = WTERMSIG(status);
    }
    return r;
}

} // namespace loader_test
