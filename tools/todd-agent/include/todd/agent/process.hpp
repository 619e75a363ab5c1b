// SPDX-License-Identifier: Apache-2.0
// Running testlets and fact collectors: own process group, stdout captured,
// stderr to the log, SIGKILL of the whole group past a deadline.
#pragma once

#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace todd::agent {

/**
 * The process groups currently running, so that stopping the agent can
 * kill them all. Thread-safe. Once closed, new processes are killed at once.
 */
class ProcessGroups {
  public:
    /** Register a group; false (and the group is killed) when closed. */
    bool add(pid_t pgid);
    /** Forget a group that ended. */
    void remove(pid_t pgid);
    /** SIGKILL every registered group and refuse new ones. */
    void kill_all_and_close();
    /** True after kill_all_and_close. */
    bool closed() const;

  private:
    mutable std::mutex mu_;
    std::set<pid_t> groups_;
    bool closed_ = false;
};

/** What to run and how. */
struct ProcessSpec {
    std::vector<std::string> argv; // argv[0] is a path, not searched
    std::chrono::milliseconds timeout{10000};
    /** Log component of the child's stderr lines. */
    std::string log_component = "process";
    /** More stdout than this is cut off and flagged. */
    size_t max_output = 1 << 20;
    /** Where the group is registered while it runs (may be null). */
    ProcessGroups *groups = nullptr;
};

/** How a process ended. */
struct ProcessResult {
    bool started = false;
    std::string spawn_error; // why it did not start
    bool timed_out = false;  // killed at the deadline
    bool cancelled = false;  // killed because the agent stops
    bool output_truncated = false;
    int exit_code = -1;  // when it exited normally
    int term_signal = 0; // when a signal ended it
    std::string out;     // stdout

    bool exited_ok() const { return started && exit_code == 0; }
    /** One line: "exit 0", "killed by signal 9", "timed out after ...". */
    std::string describe() const;
};

/**
 * Run a program and wait for it, at most spec.timeout; then SIGKILL its
 * process group. stdin is /dev/null, the signal mask and dispositions are
 * reset. When the program exits, any process it left in its group is
 * killed too. Never throws for the child's failures.
 */
ProcessResult run_process(const ProcessSpec &spec);

} // namespace todd::agent
