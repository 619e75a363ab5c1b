// SPDX-License-Identifier: Apache-2.0
#include <todd/agent/process.hpp>
#include <todd/core/log.hpp>
#include <todd/core/unique_fd.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
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

using core::UniqueFd;

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

/** The child's stdout and stderr: our read ends, its write ends. */
struct Pipes {
    UniqueFd out_r, out_w, err_r, err_w;
};

/** Make both pipes; why not on failure. */
std::optional<std::string> make_pipes(Pipes &p)
{
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        return std::string("pipe: ") + std::strerror(errno);
    p.out_r.reset(fds[0]);
    p.out_w.reset(fds[1]);
    if (::pipe2(fds, O_CLOEXEC) != 0)
        return std::string("pipe: ") + std::strerror(errno);
    p.err_r.reset(fds[0]);
    p.err_w.reset(fds[1]);
    return std::nullopt;
}

/** posix_spawn args with stdin /dev/null and stdout/stderr to the pipes;
 *  returns 0 or the error number. */
int spawn(const std::vector<std::string> &args, const Pipes &p, pid_t &pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p.out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, p.err_w.get(), 2);
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
    for (const auto &a : args)
        argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/**
 * A started child until it exited and both pipes are closed: stdout kept
 * (up to spec.max_output), stderr logged by line, its group killed at the
 * deadline and once it exited (leftovers), then at most 2 s more for the
 * pipes if something escaped the group.
 */
class ChildWatch {
  public:
    using Clock = std::chrono::steady_clock;

    ChildWatch(const ProcessSpec &spec, pid_t pid, Pipes &pipes,
               ProcessResult &r)
        : spec_(spec), pid_(pid), out_(pipes.out_r), err_(pipes.err_r), r_(r),
          // glibc 2.36 declares pidfd_open without C linkage: the syscall.
          pidfd_(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))),
          deadline_(Clock::now() + spec.timeout)
    {
    }

    /** Run until the child is done; kills its group if it did not exit. */
    void run()
    {
        while (out_ || err_ || !exited_) {
            auto now = Clock::now();
            if (!killed_ && now >= deadline_) {
                r_.timed_out = true;
                kill_group();
                drain_deadline_ = now + std::chrono::seconds(2);
            }
            if (drain_deadline_ && now >= *drain_deadline_ && exited_)
                break;
            if (!poll_once(now))
                break;
        }
        flush_lines(err_buf_, spec_.log_component, true);
        if (!exited_)
            kill_group();
    }

  private:
    void kill_group()
    {
        if (!killed_)
            ::kill(-pid_, SIGKILL);
        killed_ = true;
    }

    /** How long the next poll may wait. */
    int poll_timeout_ms(Clock::time_point now) const
    {
        auto until = drain_deadline_ ? *drain_deadline_ : deadline_;
        if (killed_ && !drain_deadline_)
            until = now + std::chrono::seconds(2);
        long ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - now)
                .count();
        if (!pidfd_ && !exited_)
            ms = std::min<long>(ms, 50); // no pidfd: look at waitpid often
        return static_cast<int>(std::max<long>(ms, 0)) + 1;
    }

    /** One poll of the pipes and the pidfd; false on a poll error. */
    bool poll_once(Clock::time_point now)
    {
        pollfd pfd[3];
        int n = 0, i_out = -1, i_err = -1, i_pid = -1;
        if (out_) {
            i_out = n;
            pfd[n++] = {out_.get(), POLLIN, 0};
        }
        if (err_) {
            i_err = n;
            pfd[n++] = {err_.get(), POLLIN, 0};
        }
        if (!exited_ && pidfd_) {
            i_pid = n;
            pfd[n++] = {pidfd_.get(), POLLIN, 0};
        }
        if (::poll(pfd, n, poll_timeout_ms(now)) < 0 && errno != EINTR)
            return false;
        const short ready = POLLIN | POLLHUP | POLLERR;
        if (i_out >= 0 && (pfd[i_out].revents & ready))
            read_out();
        if (i_err >= 0 && (pfd[i_err].revents & ready))
            read_err();
        if ((i_pid >= 0 && (pfd[i_pid].revents & POLLIN)) ||
            (!pidfd_ && !exited_))
            check_exit();
        return true;
    }

    void read_out()
    {
        ssize_t got = ::read(out_.get(), buf_, sizeof buf_);
        if (got > 0) {
            size_t room = spec_.max_output > r_.out.size()
                              ? spec_.max_output - r_.out.size()
                              : 0;
            if (static_cast<size_t>(got) > room)
                r_.output_truncated = true;
            r_.out.append(buf_, std::min<size_t>(room, got));
        } else if (got == 0 || errno != EINTR) {
            out_.reset();
        }
    }

    void read_err()
    {
        ssize_t got = ::read(err_.get(), buf_, sizeof buf_);
        if (got > 0) {
            if (err_buf_.size() < 65536)
                err_buf_.append(buf_, got);
            flush_lines(err_buf_, spec_.log_component, false);
        } else if (got == 0 || errno != EINTR) {
            err_.reset();
        }
    }

    void check_exit()
    {
        if (exited_)
            return;
        siginfo_t si{};
        // WNOWAIT: leave the zombie so the group id stays ours until
        // leftovers in it are killed.
        if (::waitid(P_PID, pid_, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == pid_) {
            exited_ = true;
            kill_group(); // leftovers of a finished testlet
            if (!drain_deadline_)
                drain_deadline_ = Clock::now() + std::chrono::seconds(2);
        }
    }

    const ProcessSpec &spec_;
    pid_t pid_;
    UniqueFd &out_, &err_;
    ProcessResult &r_;
    UniqueFd pidfd_;
    Clock::time_point deadline_;
    // After a kill, stop waiting for EOF if a process escaped the group.
    std::optional<Clock::time_point> drain_deadline_;
    bool exited_ = false, killed_ = false;
    std::string err_buf_;
    char buf_[8192];
};

/** Forget the group, reap the child and record how it ended. */
void reap(const ProcessSpec &spec, pid_t pid, ProcessResult &r)
{
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
}

} // namespace

ProcessResult run_process(const ProcessSpec &spec)
{
    ProcessResult r;
    if (spec.argv.empty()) {
        r.spawn_error = "empty command";
        return r;
    }
    Pipes pipes;
    if (auto why = make_pipes(pipes)) {
        r.spawn_error = *why;
        return r;
    }
    pid_t pid = -1;
    int rc = spawn(spec.argv, pipes, pid);
    pipes.out_w.reset();
    pipes.err_w.reset();
    if (rc != 0) {
        r.spawn_error = spec.argv[0] + ": " + std::strerror(rc);
        return r;
    }
    r.started = true;
    if (spec.groups != nullptr && !spec.groups->add(pid))
        r.cancelled = true;
    ChildWatch(spec, pid, pipes, r).run();
    reap(spec, pid, r);
    return r;
}

} // namespace todd::agent
