// SPDX-License-Identifier: Apache-2.0
// A child process for tests: output captured (a pipe) or sent to files,
// extra environment, bounded waits, SIGTERM/SIGKILL and the exit status.
// Errors (cannot start, cannot read) are std::runtime_error naming what.
#pragma once

#include <chrono>
#include <string>
#include <sys/types.h>
#include <vector>

namespace todd::test {

/** This process's environment with each NAME=value of extra replacing (or
 *  adding) NAME. */
std::vector<std::string>
environment_with(const std::vector<std::string> &extra);
/** argv/envp form of v: pointers into v, then a null pointer. */
std::vector<char *> c_strings(std::vector<std::string> &v);

/** How a child ended, or that it had not yet. */
struct ExitStatus {
    enum class How { running, exited, signaled };
    How how = How::running;
    int value = 0; ///< the exit code, or the signal number

    bool running() const { return how == How::running; }
    /** True when it exited with this code. */
    bool exited(int code) const { return how == How::exited && value == code; }
    /** The exit code, 128 + the signal that killed it, or -1 if running. */
    int code() const;
    /** "exit 0", "signal 9" or "still running". */
    std::string text() const;
};

struct SpawnOptions {
    /** NAME=value pairs added to the inherited environment (replacing a
     *  variable of the same name). */
    std::vector<std::string> env;
    std::string stdin_path = "/dev/null";
    /** Empty: stdout and stderr both go to a pipe that output() returns.
     *  Else stdout goes to this file (truncated)... */
    std::string stdout_path;
    /** ...and stderr to this one, or to stdout's file when empty. */
    std::string stderr_path;
};

/** A running program (argv[0] is a path, not looked up in PATH). Killed
 *  (SIGKILL) and reaped at destruction if it is still running. */
class Process {
  public:
    explicit Process(std::vector<std::string> argv, SpawnOptions opts = {});
    ~Process();
    Process(const Process &) = delete;
    Process &operator=(const Process &) = delete;

    pid_t pid() const { return pid_; }
    /** Its status now (reaps it if it has exited). */
    ExitStatus poll();
    /** Wait until the output (from byte offset `from`) contains needle;
     *  false when the limit passes or the output ends without it. */
    bool wait_output(const std::string &needle, std::chrono::milliseconds limit,
                     size_t from = 0);
    /** Wait at most `limit` for the exit; draining the output meanwhile. */
    ExitStatus wait(std::chrono::milliseconds limit);
    /** SIGTERM, then wait at most `limit` (no SIGKILL). */
    ExitStatus terminate(std::chrono::milliseconds limit);
    /** SIGTERM, and SIGKILL if it has not exited within `grace`. */
    ExitStatus stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
    /** SIGKILL and reap. */
    void kill_now();
    /** Send a signal (nothing if it has been reaped). */
    void signal(int sig);

    /** What it printed so far: the captured pipe, or its stdout file. */
    std::string output();
    /** Its stderr file's contents (stdout_path and stderr_path given). */
    std::string error_output() const;
    /** output().size(), for a `from` offset of wait_output(). */
    size_t output_size() { return output().size(); }

  private:
    bool read_some(std::chrono::steady_clock::time_point until);

    SpawnOptions opts_;
    pid_t pid_ = -1;
    int fd_ = -1; // the pipe's read end in pipe mode
    ExitStatus status_;
    std::string out_;
};

} // namespace todd::test
