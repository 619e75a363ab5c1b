// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/process.hpp>
#include <todd/core/log.hpp>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace todd::agent {

bool ProcessGroups::add(pid_t pgid)
{
    std::lock_guard lk(mu_);
    if (closed_) {
        ::kill(-pgid, SIGKILL);
        return false;
    }
    groups_.insert(pgid);
    return true;
}

void ProcessGroups::remove(pid_t pgid)
{
    std::lock_guard lk(mu_);
    groups_.erase(pgid);
}

void ProcessGroups::kill_all_and_close()
{
    std::lock_guard lk(mu_);
    closed_ = true;
    for (pid_t g : groups_)
        ::kill(-g, SIGKILL);
}

bool ProcessGroups::closed() const
{
    std::lock_guard lk(mu_);
    return closed_;
}

std::string ProcessResult::describe() const
{
    if (!started)
        return "did not start: " + spawn_error;
    if (cancelled)
        return "killed because the agent is stopping";
    if (timed_out)
        return "killed at the time limit";
    if (term_signal != 0)
        return std::string("killed by signal ") + std::to_string(term_signal) +
               " (" + ::strsignal(term_signal) + ")";
    return "exit status " + std::to_string(exit_code);
}

namespace {

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    ~Fd() { reset(); }
    void reset()
    {
        if (fd >= 0)
            ::close(fd);
        fd = -1;
    }
};

// Log each complete stderr line; keep the rest for the next read.
void flush_lines(std::string &buf, const std::string &component, bool all)
{
    size_t pos;
    while ((pos = buf.find('\n')) != std::string::npos) {
        if (pos > 0)
            log::info(component, buf.substr(0, pos));
        buf.erase(0, pos + 1);
    }
    if (all && !buf.empty()) {
        log::info(component, buf);
        buf.clear();
    }
}

} // namespace

ProcessResult run_process(const ProcessSpec &spec)
{
    ProcessResult r;
    if (spec.argv.empty()) {
        r.spawn_error = "empty command";
        return r;
    }
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
        r.spawn_error = std::string("pipe: ") + std::strerror(errno);
        return r;
    }
    Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
        r.spawn_error = std::string("pipe: ") + std::strerror(errno);
        return r;
    }
    Fd err_r(err_pipe[0]), err_w(err_pipe[1]);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w.fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w.fd, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Own process group (so a time-out kills the testlet's children too),
    // default signal dispositions and an empty mask: the agent blocks
    // SIGINT/SIGTERM in its threads and children must not inherit that.
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                        POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    std::vector<char *> argv;
    for (const auto &a : spec.argv)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    out_w.reset();
    err_w.reset();
    if (rc != 0) {
        r.spawn_error = spec.argv[0] + ": " + std::strerror(rc);
        return r;
    }
    r.started = true;
    if (spec.groups != nullptr && !spec.groups->add(pid))
        r.cancelled = true;

    // glibc 2.36 declares pidfd_open without C linkage: use the syscall.
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    const auto deadline = std::chrono::steady_clock::now() + spec.timeout;
    // After a kill, stop waiting for EOF if a process escaped the group.
    std::optional<std::chrono::steady_clock::time_point> drain_deadline;
    bool exited = false, killed = false;
    std::string err_buf;
    char buf[8192];
    auto kill_group = [&] {
        if (!killed)
            ::kill(-pid, SIGKILL);
        killed = true;
    };
    while (out_r.fd >= 0 || err_r.fd >= 0 || !exited) {
        auto now = std::chrono::steady_clock::now();
        if (!killed && now >= deadline) {
            r.timed_out = true;
            kill_group();
            drain_deadline = now + std::chrono::seconds(2);
        }
        if (drain_deadline && now >= *drain_deadline && exited)
            break;
        pollfd pfd[3];
        int n = 0, i_out = -1, i_err = -1, i_pid = -1;
        if (out_r.fd >= 0) {
            i_out = n;
            pfd[n++] = {out_r.fd, POLLIN, 0};
        }
        if (err_r.fd >= 0) {
            i_err = n;
            pfd[n++] = {err_r.fd, POLLIN, 0};
        }
        if (!exited && pidfd.fd >= 0) {
            i_pid = n;
            pfd[n++] = {pidfd.fd, POLLIN, 0};
        }
        auto until = drain_deadline ? *drain_deadline : deadline;
        if (killed && !drain_deadline)
            until = now + std::chrono::seconds(2);
        long ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - now)
                .count();
        if (pidfd.fd < 0 && !exited)
            ms = std::min<long>(ms, 50); // no pidfd: look at waitpid often
        int pr = ::poll(pfd, n, static_cast<int>(std::max<long>(ms, 0)) + 1);
        if (pr < 0 && errno != EINTR)
            break;
        if (i_out >= 0 && (pfd[i_out].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t got = ::read(out_r.fd, buf, sizeof buf);
            if (got > 0) {
                size_t room = spec.max_output > r.out.size()
                                  ? spec.max_output - r.out.size()
                                  : 0;
                if (static_cast<size_t>(got) > room)
                    r.output_truncated = true;
                r.out.append(buf, std::min<size_t>(room, got));
            } else if (got == 0 || errno != EINTR) {
                out_r.reset();
            }
        }
        if (i_err >= 0 && (pfd[i_err].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t got = ::read(err_r.fd, buf, sizeof buf);
            if (got > 0) {
                if (err_buf.size() < 65536)
                    err_buf.append(buf, got);
                flush_lines(err_buf, spec.log_component, false);
            } else if (got == 0 || errno != EINTR) {
                err_r.reset();
            }
        }
        bool check_exit = (i_pid >= 0 && (pfd[i_pid].revents & POLLIN)) ||
                          (pidfd.fd < 0 && !exited);
        if (check_exit && !exited) {
            siginfo_t si{};
            // WNOWAIT: leave the zombie so the group id stays ours until
            // leftovers in it are killed.
            if (::waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                exited = true;
                kill_group(); // leftovers of a finished testlet
                if (!drain_deadline)
                    drain_deadline = std::chrono::steady_clock::now() +
                                     std::chrono::seconds(2);
            }
        }
    }
    flush_lines(err_buf, spec.log_component, true);
    if (!exited)
        kill_group();
    // Forget the group before reaping: until then the id cannot be reused.
    bool closing = false;
    if (spec.groups != nullptr) {
        spec.groups->remove(pid);
        closing = spec.groups->closed();
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (closing && !r.timed_out && WIFSIGNALED(status))
        r.cancelled = true;
    if (WIFEXITED(status))
        r.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        r.term_signal = WTERMSIG(status);
    return r;
}

} // namespace todd::agent
